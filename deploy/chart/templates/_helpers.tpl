{{/*
Names follow metrics-server's chart, with "metrics-server" as the default name: a release that
was installed from metrics-server's chart keeps its object names and its (immutable) selector
labels when upgraded to this chart.
*/}}
{{- define "metrics-server.name" -}}
{{- default "metrics-server" .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "metrics-server.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "metrics-server.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "metrics-server.namespace" -}}
{{- .Values.namespaceOverride | default .Release.Namespace -}}
{{- end -}}

{{- define "metrics-server.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "metrics-server.labels" -}}
helm.sh/chart: {{ include "metrics-server.chart" . }}
{{ include "metrics-server.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: fastmetrics
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "metrics-server.selectorLabels" -}}
app.kubernetes.io/name: {{ include "metrics-server.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "metrics-server.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "metrics-server.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "metrics-server.image" -}}
{{- printf "%s:%s" .Values.image.repository (default (printf "v%s" .Chart.AppVersion) .Values.image.tag) }}
{{- end }}

{{/*
The Secret named by tls.existingSecret.name, read from the cluster at install/upgrade time
(empty under `helm template`). One definition, so that tests can render it with a stand-in.
*/}}
{{- define "metrics-server.existingSecret" -}}
{{- toJson (lookup "v1" "Secret" (include "metrics-server.namespace" .) .Values.tls.existingSecret.name) -}}
{{- end }}

{{/*
Checks that fail the render with a message naming the value.
*/}}
{{- define "metrics-server.validate" -}}
{{- if .Values.addonResizer.enabled }}
{{- fail "addonResizer.enabled: the addon-resizer sidecar is not supported by the fastmetrics chart; set resources (docs/operations.md, Sizing)" }}
{{- end }}
{{- if and .Values.hostNetwork.enabled (eq (int .Values.containerPort) 10250) }}
{{- fail "hostNetwork.enabled with containerPort 10250: the kubelet listens on 10250 on every node; set containerPort to a free port, e.g. 4443" }}
{{- end }}
{{- if not (has .Values.tls.type (list "metrics-server" "helm" "cert-manager" "existingSecret")) }}
{{- fail (printf "tls.type: %q is not one of metrics-server, helm, cert-manager, existingSecret" .Values.tls.type) }}
{{- end }}
{{- if and (eq .Values.tls.type "existingSecret") (not .Values.tls.existingSecret.name) }}
{{- fail "tls.existingSecret.name: required with tls.type existingSecret" }}
{{- end }}
{{- end }}
