"""Typed keys of the chat aiohttp application."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from services.chat.runtime import ChatRuntime

RUNTIME: Final = web.AppKey("chat_runtime", ChatRuntime)
