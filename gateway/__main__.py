from gateway.server import serve
from gateway.settings import GatewaySettings
from mesh.runner import run_process
from mesh.topology import GATEWAY

run_process(GATEWAY, GatewaySettings.from_env, serve)
