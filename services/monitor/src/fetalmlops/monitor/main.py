"""The monitor service's shell: settings → clients → its consumers, report API and metrics."""

from __future__ import annotations

from fetalmlops.changecontrol.plan import PlanError, PlanFile
from fetalmlops.common.bearer import is_loopback
from fetalmlops.common.bus import Consumer, retry_policy
from fetalmlops.common.bus.consume import BatchHandler, Handler
from fetalmlops.common.clients import Clients, connect
from fetalmlops.common.service import Service, create_app, run
from fetalmlops.common.settings import Settings
from fetalmlops.monitor.api import add_routes
from fetalmlops.monitor.rollouts import Rollouts
from fetalmlops.monitor.settings import SERVICE_NAME, MonitorSettings
from fetalmlops.monitor.stream import Monitor


def build(
    settings: Settings, own: MonitorSettings | None = None, clients: Clients | None = None
) -> Service:
    """The service on ``clients`` (default: those ``settings`` configure)."""
    own = own or MonitorSettings()
    clients = clients or connect(settings)
    try:
        plan = None if own.plan is None else PlanFile.at(own.plan)
    except PlanError as exc:
        raise SystemExit(str(exc)) from None
    monitor = Monitor(
        settings, own, clients, rollouts=None if plan is None else Rollouts(settings, plan, clients)
    )
    if not own.tokens and not is_loopback(settings.http_host):
        raise SystemExit(
            "the monitor's reports need FETALMLOPS_MONITOR_TOKENS to listen beyond loopback"
        )
    app = create_app("FetalMLOps monitor", clients.readiness([settings.buckets.models]))
    add_routes(app, clients.engine, own, monitor.rollouts)
    topics, retry = settings.topics, retry_policy(settings)

    def consumer(
        subscribed: list[str], group: str, handler: Handler, batch: BatchHandler | None = None
    ) -> Consumer:
        return Consumer(subscribed, group, handler, topics.deadletter, retry, batch)

    consumers = [
        consumer(
            [topics.models_trained, topics.models_promoted], "monitor-models", monitor.on_model
        ),
        consumer([topics.predictions], "monitor", monitor.on_prediction, monitor.on_predictions),
        consumer([topics.feedback], "monitor-feedback", monitor.on_feedback),
        consumer([topics.inference_energy], "monitor-energy", monitor.on_energy),
    ]
    return Service(settings, app, bus=clients.bus, consumers=consumers)


def main() -> None:
    run(build(Settings(service_name=SERVICE_NAME)))
