from mesh.runner import run_process
from mesh.topology import USERS
from services.users.server import serve
from services.users.settings import UsersSettings

run_process(USERS, UsersSettings.from_env, serve)
