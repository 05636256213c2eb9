"""`spec.monitoring` with the real operator binary against the emulator: the bot
runs before the Prometheus Operator exists, says why its monitoring is missing
once, and gets its ServiceMonitor and PrometheusRule when the upstream CRDs
(tests/operator/crds/, as released) are installed, with no operator restart;
switching monitoring off removes them."""
from pathlib import Path

import yaml

from conftest import Emulator
from test_operator_e2e import bot, bot_path, condition, get_or_none, mark_rolled_out

wait_for = Emulator.wait_for

CRD_DIR = Path(__file__).resolve().parent / 'crds'
MONITORING_CRDS = [yaml.safe_load(p.read_text(encoding='utf-8'))
                   for p in sorted(CRD_DIR.glob('monitoring.coreos.com_*.yaml'))]
MON = '/apis/monitoring.coreos.com/v1'


def monitoring_condition(emulator, ns):
    return condition(emulator.get(bot_path(ns)), 'MonitoringReady')


def test_monitoring_waits_for_the_prometheus_operator_and_follows_the_spec(emulator, operator, namespace):
    assert len(MONITORING_CRDS) == 2
    spec = {'monitoring': {'enabled': True, 'labels': {'release': 'prometheus'},
                           'alerts': {'ClawdBotHighLatency': {'threshold': 2, 'for': '1m'}}}}
    emulator.create(bot(namespace, spec=spec))
    m = wait_for(lambda: (c := monitoring_condition(emulator, namespace)) and c['status'] == 'False' and c,
                 message='MonitoringReady=False without the Prometheus Operator')
    assert m['reason'] == 'PrometheusOperatorMissing' and 'monitoring.coreos.com/v1' in m['message']
    # Everything else is applied and the bot becomes Ready.
    mark_rolled_out(emulator, namespace)
    wait_for(lambda: condition(emulator.get(bot_path(namespace)), 'Ready')['status'] == 'True',
             message='Ready without the Prometheus Operator')
    assert condition(emulator.get(bot_path(namespace)), 'Degraded')['status'] == 'False'
    events = emulator.get(f'/apis/events.k8s.io/v1/namespaces/{namespace}/events')['items']
    missing = [e for e in events if e['reason'] == 'PrometheusOperatorMissing']
    assert len(missing) == 1 and missing[0]['type'] == 'Warning', missing

    sm_path = f'{MON}/namespaces/{namespace}/servicemonitors/hello'
    rule_path = f'{MON}/namespaces/{namespace}/prometheusrules/hello'
    try:
        for crd in MONITORING_CRDS:
            emulator.create(crd)
        sm = wait_for(lambda: get_or_none(emulator, sm_path), timeout=30,
                      message='the ServiceMonitor once the CRDs are installed (no operator restart)')
        assert sm['metadata']['labels']['release'] == 'prometheus'
        assert sm['spec']['endpoints'] == [{'path': '/metrics', 'port': 'metrics'}]
        service = emulator.get(f'/api/v1/namespaces/{namespace}/services/hello')
        assert 'metrics' in [p['name'] for p in service['spec']['ports']]
        for k, v in sm['spec']['selector']['matchLabels'].items():
            assert service['metadata']['labels'][k] == v, 'the ServiceMonitor selects the bot Service'
        rule = wait_for(lambda: get_or_none(emulator, rule_path), message='the PrometheusRule')
        assert rule['metadata']['labels']['release'] == 'prometheus'
        rules = {r['alert']: r for r in rule['spec']['groups'][0]['rules']}
        assert len(rules) == 8, sorted(rules)
        assert rules['ClawdBotHighLatency']['for'] == '1m' and '> 2' in rules['ClawdBotHighLatency']['expr']
        assert all(r['annotations']['runbook_url'].endswith(f'/{a}.md') for a, r in rules.items())
        wait_for(lambda: monitoring_condition(emulator, namespace)['status'] == 'True',
                 message='MonitoringReady=True')

        emulator.patch(bot_path(namespace), {'spec': {'monitoring': {'enabled': False}}})
        wait_for(lambda: get_or_none(emulator, sm_path) is None and get_or_none(emulator, rule_path) is None,
                 message='both removed when monitoring is switched off')
        wait_for(lambda: monitoring_condition(emulator, namespace) is None, message='MonitoringReady removed')
    finally:
        for crd in MONITORING_CRDS:
            emulator.delete(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}")
