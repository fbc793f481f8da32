{{/*
Expand the name of the chart.
*/}}
{{- define "agenttask-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
We truncate at 63 chars because some Kubernetes name fields are limited to this (by the DNS naming spec).
If release name contains chart name it will be used as a full name.
*/}}
{{- define "agenttask-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Create chart name and version as used by the chart label.
*/}}
{{- define "agenttask-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels
*/}}
{{- define "agenttask-operator.labels" -}}
helm.sh/chart: {{ include "agenttask-operator.chart" . }}
{{ include "agenttask-operator.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels
*/}}
{{- define "agenttask-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "agenttask-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Create the name of the service account to use
*/}}
{{- define "agenttask-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "agenttask-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image reference: repository:tag, tag defaulting to the chart's appVersion.
*/}}
{{- define "agenttask-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
RBAC rules in the namespaces whose AgentTasks the operator runs. Each verb was checked against a
real API server by removing it (docs/install.md lists what breaks without it); tests/test_rbac.py
runs the operator with exactly these rules.
*/}}
{{- define "agenttask-operator.namespacedRules" -}}
# AgentTasks: kopf lists and watches them and patches its finalizer and annotations onto them;
# each task loop reads its task; a finished task is deleted when its TTL runs out. Schedules
# create theirs, and delete them for concurrencyPolicy Replace and beyond their history limits.
- apiGroups: ["agenttask.dev"]
  resources: ["agenttasks"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Every progress write is a merge patch to the status subresource.
- apiGroups: ["agenttask.dev"]
  resources: ["agenttasks/status"]
  verbs: ["patch"]
# AgentModels and AgentToolServers: kopf lists and watches them and patches its finalizer and
# annotations (their periodic re-checks are kopf timers); a task reads the ones it names.
- apiGroups: ["agenttask.dev"]
  resources: ["agentmodels", "agenttoolservers"]
  verbs: ["get", "list", "watch", "patch"]
# Their Ready condition and what was discovered.
- apiGroups: ["agenttask.dev"]
  resources: ["agentmodels/status", "agenttoolservers/status"]
  verbs: ["patch"]
# AgentToolApprovals (a reviewer's decision on a tool call a task waits for): kopf watches them
# to wake the task a new one names; a waiting task lists its own (field selector spec.task).
- apiGroups: ["agenttask.dev"]
  resources: ["agenttoolapprovals"]
  verbs: ["list", "watch"]
# Their Accepted condition.
- apiGroups: ["agenttask.dev"]
  resources: ["agenttoolapprovals/status"]
  verbs: ["patch"]
# AgentTaskSchedules: kopf lists and watches them (one loop each) and patches its finalizer and
# annotations onto them.
- apiGroups: ["agenttask.dev"]
  resources: ["agenttaskschedules"]
  verbs: ["list", "watch", "patch"]
# Their last and next ticks, active tasks and Ready condition.
- apiGroups: ["agenttask.dev"]
  resources: ["agenttaskschedules/status"]
  verbs: ["patch"]
# The transcript: immutable ConfigMaps <task>-<uid8>-transcript-sNNNNNN, owned by their task.
# list: load it; create: append a step. Nothing stored is ever rewritten or deleted by us.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["list", "create"]
# Events on tasks (Started, Retrying, Succeeded, ...) and schedules (TaskCreated, ...): core/v1
# Events, as kopf posts them too.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# Concurrency limits (AgentModel maxConcurrentTasks, the per-namespace limit): their places are
# annotations of one Lease per namespace, agenttask-slots, changed only with a resourceVersion
# precondition. get/update of that Lease alone (no other component's Lease); create cannot be
# limited to a name.
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  resourceNames: ["agenttask-slots"]
  verbs: ["get", "update"]
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["create"]
{{- if .Values.rbac.readSecrets }}
# Model API keys that a task or an AgentModel names (apiKeySecretRef), and the header Secrets of
# AgentToolServers (headersFrom).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}
{{- end }}

{{/*
Cluster-scoped reads of kopf: it watches CRDs to notice the AgentTask CRD appear or change; when
it runs a list of namespaces, it also lists and watches namespaces to follow them (without that,
it retries for about a minute before it starts).
*/}}
{{- define "agenttask-operator.clusterRules" -}}
# kopf watches CRDs, to notice the AgentTask CRD appear or change.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- if .Values.watchNamespaces }}
# kopf follows the namespaces it watches.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}
{{- end }}
