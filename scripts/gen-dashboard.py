#!/usr/bin/env python3
"""Writes deploy/grafana/clawdbot-dashboard.json, the Grafana dashboard of one
ClawdBot (pick the namespace and bot at the top). The panels are listed here
so they stay readable; the JSON is what Grafana imports and what the operator
ships in a ConfigMap (spec.monitoring.grafanaDashboard). Every query is
checked by bot-runtime/tests/monitoring_queries.rs (promtool parses it; every
clawdbot_* name is a metric the runtime registers).

    python3 scripts/gen-dashboard.py          # then commit the JSON
    python3 scripts/gen-dashboard.py --check  # fails when the JSON is stale (make lint)
"""
import json
import pathlib
import sys

OUT = pathlib.Path(__file__).resolve().parents[1] / 'deploy/grafana/clawdbot-dashboard.json'
SEL = 'namespace="$namespace",service="$bot"'
RI = '$__rate_interval'
CHAT = '/api/v1/chat|/v1/chat/completions'


def quantiles(metric, by, extra=''):
    return [(f'histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{{{SEL}{extra}}}[{RI}])))',
             f'p{int(q * 100)} {{{{{by}}}}}') for q in (0.5, 0.95, 0.99)]


# (title, unit, description, [(expr, legend)])
ROWS = [
    ('Traffic and latency', [
        ('Requests per second by route', 'reqps', 'Every HTTP request the bot answered, health probes included.',
         [(f'sum by (route) (rate(clawdbot_http_request_duration_seconds_count{{{SEL}}}[{RI}]))', '{{route}}')]),
        ('Request latency by route (p50/p95/p99)', 's', 'Whole request time; for streamed answers the time to the stream head.',
         quantiles('clawdbot_http_request_duration_seconds', 'route', ',route!~"/health.*"')),
        ('Chat latency users feel (p95)', 's',
         'Stream head of streamed chat answers and whole non-streamed answers, the two ClawdBotHighLatency/ClawdBotSlowResponses watch.',
         [(f'histogram_quantile(0.95, sum by (le, stream) (rate(clawdbot_http_request_duration_seconds_bucket{{{SEL},route=~"{CHAT}"}}[{RI}])))',
           'stream={{stream}}')]),
        ('Streams in flight and sessions', 'short', 'Open streamed answers; sessions held in pod memory (in-memory store only).',
         [(f'sum(clawdbot_active_streams{{{SEL}}})', 'streams'), (f'sum(clawdbot_sessions{{{SEL}}})', 'sessions')]),
    ]),
    ('Model', [
        ('Time to first token (p50/p95/p99)', 's', 'From sending the request upstream to the first token.',
         quantiles('clawdbot_model_time_to_first_token_seconds', 'provider')),
        ('Tokens per second', 'short', 'Prompt and completion tokens as the provider reported them.',
         [(f'sum by (provider, kind) (rate(clawdbot_model_tokens_total{{{SEL}}}[{RI}]))', '{{provider}} {{kind}}')]),
        ('Model requests by outcome', 'reqps', 'ok, cancelled (the client left), rejected (the caller\'s fields), and the upstream failures.',
         [(f'sum by (outcome) (rate(clawdbot_model_request_duration_seconds_count{{{SEL}}}[{RI}]))', '{{outcome}}')]),
        ('Open circuit breakers', 'short', '1 while an upstream endpoint is skipped after repeated failures.',
         [(f'max by (provider, endpoint) (clawdbot_model_circuit_open{{{SEL}}})', '{{provider}} {{endpoint}}')]),
    ]),
    ('Errors', [
        ('HTTP errors by status', 'reqps', '4xx are the clients\' mistakes; 5xx are ours (ClawdBotHighErrorRate).',
         [(f'sum by (status) (rate(clawdbot_http_request_duration_seconds_count{{{SEL},status=~"[45].."}}[{RI}]))', '{{status}}')]),
        ('Refused requests', 'reqps', 'Missing or wrong API keys, rate limits, Redis session store failures.',
         [(f'sum by (reason) (rate(clawdbot_auth_failures_total{{{SEL}}}[{RI}]))', 'auth {{reason}}'),
          (f'sum by (limit) (rate(clawdbot_rate_limited_total{{{SEL}}}[{RI}]))', 'rate limit {{limit}}'),
          (f'sum by (op) (rate(clawdbot_redis_errors_total{{{SEL}}}[{RI}]))', 'redis {{op}}')]),
    ]),
    ('IM channels', [
        ('Deliveries received by channel and outcome', 'reqps', 'Webhooks and long-connection events: accepted, duplicate, and refused (bad_signature, stale, bad_token, ...).',
         [(f'sum by (channel, outcome) (rate(clawdbot_webhook_requests_total{{{SEL}}}[{RI}]))', '{{channel}} {{outcome}}')]),
        ('Replies by channel and outcome', 'reqps', 'failed = given up after every retry (ClawdBotChannelRepliesFailing).',
         [(f'sum by (channel, outcome) (rate(clawdbot_channel_replies_total{{{SEL}}}[{RI}]))', '{{channel}} {{outcome}}'),
          (f'sum by (channel, outcome) (rate(clawdbot_notifications_total{{{SEL}}}[{RI}]))', 'notify {{channel}} {{outcome}}')]),
        ('Reply time by channel (p95)', 's', 'From receiving an IM message to the platform accepting the reply.',
         [(f'histogram_quantile(0.95, sum by (le, channel) (rate(clawdbot_channel_reply_duration_seconds_bucket{{{SEL}}}[{RI}])))', '{{channel}}')]),
        ('Deliveries in flight', 'short', 'IM messages claimed and not yet answered.',
         [(f'sum(clawdbot_channel_deliveries_in_flight{{{SEL}}})', 'in flight')]),
    ]),
    ('Conversation log and replicas', [
        ('Log queue depth', 'short', 'Exchanges waiting for the database writer (ClawdBotLogBacklog above 1000).',
         [(f'max by (pod) (clawdbot_log_queue_depth{{{SEL}}})', '{{pod}}')]),
        ('Log write failures and spills', 'short', 'Spilled exchanges went to the pod\'s local file: durability at risk.',
         [(f'sum(increase(clawdbot_log_write_failures_total{{{SEL}}}[{RI}]))', 'write failures'),
          (f'sum(increase(clawdbot_log_spilled_total{{{SEL}}}[{RI}]))', 'spilled')]),
        ('Replicas', 'short', 'Desired and available from kube-state-metrics; scraped pods from Prometheus.',
         [('max(kube_deployment_spec_replicas{namespace="$namespace",deployment="$bot"})', 'desired'),
          ('max(kube_deployment_status_replicas_available{namespace="$namespace",deployment="$bot"})', 'available'),
          (f'sum(up{{{SEL}}})', 'scraped and up')]),
    ]),
]


def panel(pid, title, unit, description, targets, x, y):
    return {
        'id': pid, 'type': 'timeseries', 'title': title, 'description': description,
        'datasource': {'type': 'prometheus', 'uid': '${datasource}'},
        'gridPos': {'h': 8, 'w': 12, 'x': x, 'y': y},
        'fieldConfig': {'defaults': {'unit': unit, 'custom': {'fillOpacity': 10}}, 'overrides': []},
        'options': {'legend': {'displayMode': 'list', 'placement': 'bottom'}, 'tooltip': {'mode': 'multi'}},
        'targets': [{'refId': chr(ord('A') + i), 'expr': e, 'legendFormat': l,
                     'datasource': {'type': 'prometheus', 'uid': '${datasource}'}}
                    for i, (e, l) in enumerate(targets)],
    }


def dashboard():
    panels, pid, y = [], 1, 0
    for row_title, items in ROWS:
        panels.append({'id': pid, 'type': 'row', 'title': row_title, 'collapsed': False,
                       'gridPos': {'h': 1, 'w': 24, 'x': 0, 'y': y}, 'panels': []})
        pid, y = pid + 1, y + 1
        for i, (title, unit, desc, targets) in enumerate(items):
            panels.append(panel(pid, title, unit, desc, targets, 12 * (i % 2), y + 8 * (i // 2)))
            pid += 1
        y += 8 * ((len(items) + 1) // 2)
    var = lambda name, label, query: {
        'name': name, 'label': label, 'type': 'query', 'refresh': 2, 'sort': 1,
        'datasource': {'type': 'prometheus', 'uid': '${datasource}'},
        'definition': query, 'query': {'query': query, 'refId': name},
        'current': {}, 'includeAll': False, 'multi': False, 'options': [],
    }
    return {
        'uid': 'clawdbot', 'title': 'ClawdBot', 'tags': ['clawdbot'],
        'description': 'One ClawdBot: traffic, latency, model, errors, IM channels, conversation log, replicas.',
        'editable': True, 'schemaVersion': 39, 'version': 1, 'refresh': '30s',
        'time': {'from': 'now-6h', 'to': 'now'}, 'timezone': 'browser', 'graphTooltip': 1,
        'templating': {'list': [
            {'name': 'datasource', 'label': 'Data source', 'type': 'datasource', 'query': 'prometheus',
             'current': {}, 'options': [], 'refresh': 1},
            var('namespace', 'Namespace', 'label_values(clawdbot_http_request_duration_seconds_count, namespace)'),
            var('bot', 'ClawdBot', 'label_values(clawdbot_http_request_duration_seconds_count{namespace="$namespace"}, service)'),
        ]},
        'annotations': {'list': []},
        'links': [],
        'panels': panels,
    }


if __name__ == '__main__':
    text = json.dumps(dashboard(), indent=2) + '\n'
    if '--check' in sys.argv[1:]:
        if not OUT.exists() or OUT.read_text(encoding='utf-8') != text:
            sys.exit(f'{OUT} is stale: run python3 scripts/gen-dashboard.py and commit it')
    else:
        OUT.write_text(text, encoding='utf-8')
        print(f'wrote {OUT}')
