from mesh.runner import run_process
from mesh.topology import ANALYTICS
from services.analytics.server import serve
from services.analytics.settings import AnalyticsSettings

run_process(ANALYTICS, AnalyticsSettings.from_env, serve)
