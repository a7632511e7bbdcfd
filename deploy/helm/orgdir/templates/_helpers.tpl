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
{{- $registry := .root.Values.image.registry }}
{{- if hasKey $img "registry" }}{{/* an extra consumer's own registry ("" = repository is complete) */}}
{{- $registry = $img.registry }}
{{- end }}
{{- if $registry }}
{{- $repo = printf "%s/%s" $registry $img.repository }}
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

{{/*
Every workload the chart runs, as a JSON list of (dict "name" "svc" "extra" "where"): the four
services and the portal, then each of extraConsumers (a vendor's consumer, `orgdir new-consumer`)
merged over extraConsumerDefaults. The per-service templates range over this list, so an extra
consumer gets the same Deployment, Service, ServiceAccount, ConfigMap, PodDisruptionBudget,
HPA / KEDA ScaledObject and NetworkPolicy as the services (no ingress paths: it has no API).
Read with `include "orgdir.workloads" $ | fromJsonArray`.
*/}}
{{- define "orgdir.workloads" -}}
{{- $out := list }}
{{- range $name, $svc := .Values.services }}
{{- $out = append $out (dict "name" $name "svc" $svc "extra" false "where" (printf "services.%s" $name)) }}
{{- end }}
{{- $base := dict "enabled" true "config" (dict) "existingSecret" "" "extraEnv" (list) "egress" (list) "nodeSelector" (dict) "tolerations" (list) "affinity" (dict) "image" (dict "registry" "" "digest" "") "ingress" (dict "prefixPaths" (list) "regexPaths" (list)) }}
{{- $base = include "orgdir.deepMerge" (list $base (.Values.extraConsumerDefaults | default dict)) | fromJson }}
{{- $seen := dict }}
{{- range $i, $entry := .Values.extraConsumers }}
{{- $svc := include "orgdir.deepMerge" (list $base $entry) | fromJson }}
{{- $name := $svc.name }}
{{- $where := printf "extraConsumers[%d] (%s)" $i $name }}
{{- if or (hasKey $.Values.services $name) (hasKey $seen $name) }}
{{- fail (printf "%s: the name %s is already taken (by a service or another extra consumer); every workload needs its own" $where $name) }}
{{- end }}
{{- $_ := set $seen $name true }}
{{- if hasKey $svc.config "ORGDIR_SERVICE_NAME" }}
{{- fail (printf "%s.config.ORGDIR_SERVICE_NAME: the chart sets it to the name (%s), which names its queues and metrics; leave it out" $where $name) }}
{{- end }}
{{- $prefix := get $svc.config "ORGDIR_QUEUE_PREFIX" | default (get ($.Values.config.extra | default dict) "ORGDIR_QUEUE_PREFIX") | default "" }}
{{- range $svc.consumers }}
{{- if not (hasPrefix (printf "%s%s." $prefix $name) .queue) }}
{{- fail (printf "%s: queue %s must start with %s%s. (the consumer declares <name>.<consumer>; Orgdir's own queues are not its to read)" $where .queue $prefix $name) }}
{{- end }}
{{- end }}
{{- $out = append $out (dict "name" $name "svc" (omit $svc "name") "extra" true "where" $where) }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/*
(list <base> <override>) -> JSON of base with override laid over it: maps merge key by key,
anything else (lists, false, null, "") replaces. Unlike mergeOverwrite, `enabled: false` and
`minAvailable: null` in the override win.
*/}}
{{- define "orgdir.deepMerge" -}}
{{- $out := deepCopy (index . 0) }}
{{- range $k, $v := index . 1 }}
{{- if and (kindIs "map" $v) (kindIs "map" (index $out $k)) }}
{{- $_ := set $out $k (include "orgdir.deepMerge" (list (index $out $k) $v) | fromJson) }}
{{- else }}
{{- $_ := set $out $k $v }}
{{- end }}
{{- end }}
{{- toJson $out }}
{{- end }}
