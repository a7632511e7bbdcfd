{{/*
Names and labels. Per-service helpers take a context built by "orgdir.ctx":
(dict "root" $ "name" <service name> "svc" <its values>).
*/}}

{{- define "orgdir.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "orgdir.fullname" -}}
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

{{- define "orgdir.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every resource of the release. */}}
{{- define "orgdir.labels" -}}
helm.sh/chart: {{ include "orgdir.chart" . }}
{{ include "orgdir.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: orgdir
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "orgdir.selectorLabels" -}}
app.kubernetes.io/name: {{ include "orgdir.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Name of one service's objects: <fullname>-<service>. */}}
{{- define "orgdir.svc.fullname" -}}
{{- printf "%s-%s" (include "orgdir.fullname" .root) .name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "orgdir.svc.labels" -}}
{{ include "orgdir.labels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{- define "orgdir.svc.selectorLabels" -}}
{{ include "orgdir.selectorLabels" .root }}
app.kubernetes.io/component: {{ .name }}
{{- end }}

{{- define "orgdir.svc.serviceAccountName" -}}
{{- if .root.Values.serviceAccount.create }}
{{- include "orgdir.svc.fullname" . }}
{{- else }}
{{- "default" }}
{{- end }}
{{- end }}

{{/* registry/repository[:tag][@digest] of one service. */}}
{{- define "orgdir.svc.image" -}}
{{- $img := .svc.image }}
{{- $tag := $img.tag | default .root.Values.image.tag | default .root.Chart.AppVersion }}
{{- $repo := $img.repository }}
{{- if .root.Values.image.registry }}
{{- $repo = printf "%s/%s" .root.Values.image.registry $img.repository }}
{{- end }}
{{- if $img.digest }}
{{- printf "%s:%s@%s" $repo $tag $img.digest }}
{{- else }}
{{- printf "%s:%s" $repo $tag }}
{{- end }}
{{- end }}

{{/* The shared Secret: an existing one, or the one the chart creates. */}}
{{- define "orgdir.secretName" -}}
{{- if .Values.secrets.existingSecret }}
{{- .Values.secrets.existingSecret }}
{{- else }}
{{- printf "%s-secrets" (include "orgdir.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
Should this service be scaled by KEDA (instead of an HPA)? "true" or "".
Only when it consumes a competing-consumer queue: a single-active queue is read
by one replica at a time, so its length says nothing about how many are needed.
*/}}
{{- define "orgdir.svc.useKeda" -}}
{{- if and .root.Values.keda.enabled .svc.autoscaling.enabled (include "orgdir.svc.scalingQueues" .) }}true{{ end }}
{{- end }}

{{/* The consumers KEDA may scale this service on (not single-active), as JSON; "" for none. */}}
{{- define "orgdir.svc.scalingQueues" -}}
{{- $queues := list }}
{{- range .svc.consumers }}{{ if not .singleActiveConsumer }}{{ $queues = append $queues . }}{{ end }}{{ end }}
{{- if $queues }}{{ toJson $queues }}{{ end }}
{{- end }}

{{/* Is a monitoring CRD wanted? Args: (list <enabled value> <root> <api/version/Kind>). */}}
{{- define "orgdir.monitoringEnabled" -}}
{{- $enabled := index . 0 }}
{{- $root := index . 1 }}
{{- if eq (toString $enabled) "auto" }}
{{- if $root.Capabilities.APIVersions.Has (index . 2) }}true{{ end }}
{{- else if $enabled }}true{{ end }}
{{- end }}

{{/*
Egress rule to cidrs + peers on TCP ports. Args: (dict "target" <networkPolicy.x>).
An empty `to` list means any destination on those ports.
*/}}
{{- define "orgdir.egressRule" -}}
{{- $to := list }}
{{- range .target.cidrs }}
{{- $to = append $to (dict "ipBlock" (dict "cidr" .)) }}
{{- end }}
{{- range .target.peers }}
{{- $to = append $to . }}
{{- end }}
- ports:
  {{- range .target.ports }}
  - protocol: TCP
    port: {{ . }}
  {{- end }}
  {{- with $to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* Refuse configuration keys that look secret: they belong in the Secret. */}}
{{- define "orgdir.checkNotSecret" -}}
{{- $where := index . 0 }}
{{- range $key, $_ := index . 1 }}
{{- if regexMatch "(?i)(SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL|_KEY$|MONGODB_URL|AMQP_URL)" $key }}
{{- fail (printf "%s.%s looks like a secret; put it in the Secret (secrets.existingSecret or secrets.values), never in a ConfigMap" $where $key) }}
{{- end }}
{{- end }}
{{- end }}
