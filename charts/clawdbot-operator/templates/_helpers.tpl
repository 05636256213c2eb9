{{/* The release's full name: the release name when it already says clawdbot-operator. */}}
{{- define "clawdbot-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "clawdbot-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "clawdbot-operator.labels" -}}
{{ include "clawdbot-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "clawdbot-operator.serviceAccountName" -}}
{{- default (include "clawdbot-operator.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* The watched namespaces, comma-separated (WATCH_NAMESPACE), or empty for all. */}}
{{- define "clawdbot-operator.watchNamespaces" -}}
{{- join "," .Values.watchNamespaces -}}
{{- end -}}

{{/* Rules needed wherever ClawdBots are reconciled (a ClusterRole, or a Role in each watched namespace). Each is in the chart README and matches `clawdbot-operator permissions`. */}}
{{- define "clawdbot-operator.watchedRules" -}}
# What it reconciles. It never writes a ClawdBot's spec, only its status.
- apiGroups: ["clawdbot.io"]
  resources: ["clawdbots"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["clawdbot.io"]
  resources: ["clawdbots/status"]
  verbs: ["get", "patch", "update"]
# Children carry ownerReferences with blockOwnerDeletion: true; the
# OwnerReferencesPermissionEnforcement admission plugin (OpenShift, hardened
# clusters) then requires update on the owner's finalizers.
- apiGroups: ["clawdbot.io"]
  resources: ["clawdbots/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["configmaps", "services", "serviceaccounts"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# Reads the Secrets a ClawdBot references (to roll pods when they change),
# creates generated credentials once, server-side applies the connections
# Secret (patch), deletes what it generated. Never update.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Checks data volumes and creates the backup volume; never edits a claim.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "list", "watch", "create", "delete"]
# The bot runtime (Deployments), managed Redis and PostgreSQL (StatefulSets).
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# pg_dump backups of the managed PostgreSQL.
- apiGroups: ["batch"]
  resources: ["cronjobs"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# PostgreSQL through CloudNativePG, when installed (harmless without it).
- apiGroups: ["postgresql.cnpg.io"]
  resources: ["clusters"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# spec.monitoring, when the Prometheus Operator is installed.
- apiGroups: ["monitoring.coreos.com"]
  resources: ["servicemonitors", "prometheusrules"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies", "ingresses"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# Events about ClawdBots. /version and discovery need no rule
# (system:discovery allows them to every authenticated user).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
