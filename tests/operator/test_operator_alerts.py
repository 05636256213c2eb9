"""The operator's own alert rules (deploy/prometheus/clawdbot-operator-rules.yaml) through Prometheus's
checker and unit tests: `promtool check rules` and `promtool test rules` with alerts/operator-rules.test.yaml
(Debian's prometheus package; scripts/install-test-tools.sh installs it)."""
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / 'deploy/prometheus/clawdbot-operator-rules.yaml'
TESTS = Path(__file__).resolve().parent / 'alerts/operator-rules.test.yaml'
PROMTOOL = '/usr/bin/promtool'


def promtool(*args, cwd):
    assert Path(PROMTOOL).exists(), f'{PROMTOOL} is missing: run scripts/install-test-tools.sh'
    r = subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout + r.stderr


def test_operator_rules_check_and_fire_as_documented(tmp_path):
    rule = yaml.safe_load(RULES.read_text())
    assert (rule['apiVersion'], rule['kind']) == ('monitoring.coreos.com/v1', 'PrometheusRule')
    alerts = [r['alert'] for g in rule['spec']['groups'] for r in g['rules']]
    assert alerts == ['ClawdBotOperatorDown', 'ClawdBotOperatorReconcileErrors', 'ClawdBotDegraded']
    for r in (r for g in rule['spec']['groups'] for r in g['rules']):
        page = r['annotations']['runbook_url'].rsplit('/', 1)[1]
        assert (ROOT / 'docs/runbooks' / page).is_file(), page
    (tmp_path / 'operator-rules.yaml').write_text(yaml.safe_dump({'groups': rule['spec']['groups']}))
    shutil.copy(TESTS, tmp_path / TESTS.name)
    code, out = promtool('check', 'rules', 'operator-rules.yaml', cwd=tmp_path)
    assert code == 0 and '3 rules found' in out, out
    code, out = promtool('test', 'rules', TESTS.name, cwd=tmp_path)
    assert code == 0, out


def test_the_unit_tests_catch_a_wrong_threshold(tmp_path):
    """The unit tests are not vacuous: the same tests fail against rules with other thresholds."""
    rule = yaml.safe_load(RULES.read_text())
    for g in rule['spec']['groups']:
        for r in g['rules']:
            r['expr'] = r['expr'].replace('> 3', '> 6').replace('== 1', '== 2').replace('< 1', '< 0')
    (tmp_path / 'operator-rules.yaml').write_text(yaml.safe_dump({'groups': rule['spec']['groups']}))
    shutil.copy(TESTS, tmp_path / TESTS.name)
    code, out = promtool('test', 'rules', TESTS.name, cwd=tmp_path)
    assert code != 0
    for alert in ('ClawdBotOperatorReconcileErrors', 'ClawdBotDegraded', 'ClawdBotOperatorDown'):
        assert f'alertname: {alert}' in out, (alert, out)
