from mesh.runner import run_process
from mesh.topology import CHAT
from services.chat.server import serve
from services.chat.settings import ChatSettings

run_process(CHAT, ChatSettings.from_env, serve)
