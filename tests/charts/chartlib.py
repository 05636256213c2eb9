"""Shared by the chart tests (tests/charts) and the operator's RBAC end-to-end test (tests/operator):
helm (pinned, .cache/tools/helm), rendering, and what rendered Roles grant a ServiceAccount."""
import json
import os
import pathlib
import subprocess

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
OPERATOR_CHART = ROOT / 'charts' / 'clawdbot-operator'
BOTS_CHART = ROOT / 'charts' / 'clawdbot'
HELM = os.environ.get('HELM') or str(ROOT / '.cache' / 'tools' / 'helm')
MONITORING_APIS = ['monitoring.coreos.com/v1/ServiceMonitor', 'monitoring.coreos.com/v1/PrometheusRule']


def helm(*args, check=True):
    if not os.access(HELM, os.X_OK):
        pytest.fail(f'helm not found at {HELM}: run scripts/install-test-tools.sh', pytrace=False)
    proc = subprocess.run([HELM, *args], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f'helm {" ".join(args)} failed ({proc.returncode}):\n{proc.stderr}')
    return proc


def render(chart, *args, namespace='clawdbot-system', release='clawdbot-operator'):
    """Rendered documents of `helm template` (None documents dropped)."""
    out = helm('template', release, str(chart), '--namespace', namespace, *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def operator_bin():
    path = os.environ.get('OPERATOR_BIN') or str(ROOT / 'target' / 'debug' / 'clawdbot-operator')
    if not os.access(path, os.X_OK):
        pytest.fail(f'clawdbot-operator binary not found at {path}: set OPERATOR_BIN', pytrace=False)
    return path


def required_permissions():
    """What the operator's code says it needs (`clawdbot-operator permissions`)."""
    out = subprocess.run([operator_bin(), 'permissions'], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


class Grants:
    """The RBAC that rendered Roles/ClusterRoles and their bindings give one ServiceAccount."""

    def __init__(self, docs, sa_namespace, sa_name):
        roles = {(d['kind'], d['metadata'].get('namespace'), d['metadata']['name']): d['rules']
                 for d in docs if d['kind'] in ('Role', 'ClusterRole')}
        self.cluster, self.namespaced = [], {}  # rules anywhere; ns -> rules
        for b in docs:
            if b['kind'] not in ('RoleBinding', 'ClusterRoleBinding'):
                continue
            if not any(s.get('kind') == 'ServiceAccount' and s.get('name') == sa_name
                       and s.get('namespace') == sa_namespace for s in b.get('subjects', [])):
                continue
            ref = b['roleRef']
            ns = b['metadata'].get('namespace')
            key = (ref['kind'], ns if ref['kind'] == 'Role' else None, ref['name'])
            rules = roles.get(key)
            assert rules is not None, f'{b["kind"]} {b["metadata"]["name"]} refers to a missing {key}'
            if b['kind'] == 'ClusterRoleBinding':
                self.cluster += rules
            else:
                self.namespaced.setdefault(ns, []).extend(rules)

    @staticmethod
    def _match(rules, group, resource, verb):
        return any(group in r.get('apiGroups', []) and resource in r.get('resources', [])
                   and verb in r.get('verbs', []) for r in rules)

    def allows(self, group, resource, verb, namespace=None):
        """namespace None: a cluster-wide request (all namespaces, or a cluster-scoped resource)."""
        if self._match(self.cluster, group, resource, verb):
            return True
        return namespace is not None and self._match(self.namespaced.get(namespace, []), group, resource, verb)
