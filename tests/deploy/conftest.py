"""Fixtures of the deployment checks: the overlays rendered once per session, from a copy."""

from __future__ import annotations

import pytest

from tests.deploy.deploykit import OVERLAYS, Rendered, copy_k8s_tree, render


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Rendered]:
    tree = copy_k8s_tree(tmp_path_factory.mktemp("k8s"))
    return {overlay: Rendered(overlay, render(tree, overlay)) for overlay in OVERLAYS}
