from mesh.runner import run_process
from mesh.topology import CATALOG
from services.catalog.server import serve
from services.catalog.settings import CatalogSettings

run_process(CATALOG, CatalogSettings.from_env, serve)
