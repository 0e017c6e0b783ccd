{{/*
Chart name, for app.kubernetes.io/name.
*/}}
{{- define "kos.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Name of every object. Clients (KServe's configmap, collectors, ScaledObjects)
address keda-otel-scaler.<namespace>.svc, so the name does not depend on the
release name; fullnameOverride changes it.
*/}}
{{- define "kos.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "kos.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kos.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kos.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kos.labels" -}}
helm.sh/chart: {{ include "kos.chart" . }}
{{ include "kos.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: keda-external-scaler
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "kos.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kos.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kos.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
Flag env twins: KOS_ + flag name upper-cased, - → _. Keys of .Values.config
mapped to their flag names; empty values are left to the server's default.
*/}}
{{- define "kos.flagEnv" -}}
{{- $flags := dict
  "logLevel" "log-level"
  "logFormat" "log-format"
  "shutdownTimeout" "shutdown-timeout"
  "otlpMaxRecvSize" "otlp-max-recv-size"
  "otlpMaxInflightBytes" "otlp-max-inflight-bytes"
  "retention" "retention"
  "freshness" "freshness"
  "defaultWindow" "default-window"
  "warmup" "warmup"
  "readyPeersTimeout" "ready-peers-timeout"
  "pushHoldoff" "push-holdoff"
  "otlpDelta" "otlp-delta"
  "otlpPromoteResourceAttributes" "otlp-promote-resource-attributes"
  "maxSeries" "max-series"
  "maxSeriesPerMetric" "max-series-per-metric"
  "maxLabelsPerSeries" "max-labels-per-series"
  "maxLabelNameLength" "max-label-name-length"
  "maxLabelValueLength" "max-label-value-length"
  "maxMetricNameLength" "max-metric-name-length"
  "seriesTTL" "series-ttl"
  "maxSamplesPerSeries" "max-samples-per-series"
  "maxSampleMemory" "max-sample-memory"
  "checkpointInterval" "checkpoint-interval"
  "reloadInterval" "reload-interval"
  "triggerTTL" "trigger-ttl"
  "maxTriggers" "max-triggers"
  "maxTriggerBytes" "max-trigger-bytes"
  "triggerCacheBytes" "trigger-cache-bytes"
  "maxStreams" "max-streams"
  "maxEvaluations" "max-evaluations"
  "queryMaxLabelBytes" "query-max-label-bytes"
  "grpcReflection" "grpc-reflection"
  "metricAllowList" "metric-allow-list"
  "lazyIngest" "lazy-ingest"
  "queryMaxConcurrency" "query-max-concurrency"
  "queryMaxSamples" "query-max-samples"
  "queryTimeout" "query-timeout"
  "otlpMaxConnections" "otlp-max-connections"
  "scalerMaxConnections" "scaler-max-connections"
  "httpMaxConnections" "http-max-connections"
}}
{{- range $key := keys $flags | sortAlpha }}
{{- $flag := get $flags $key }}
{{- $v := get $.Values.config $key }}
{{- if kindIs "slice" $v }}{{ $v = join "," $v }}{{ end }}
{{- if and (not (kindIs "invalid" $v)) (ne (toString $v) "") }}
- name: {{ printf "KOS_%s" ($flag | upper | replace "-" "_") }}
  value: {{ toString $v | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
A probe of the HTTP port as the HTTP listener serves it: HTTPS when
tls.http is enabled (the kubelet does not verify the certificate), and a TCP
check when tls.http.caKey requires client certificates, which the kubelet
cannot present. Probes that are not httpGet are left alone.
*/}}
{{- define "kos.probe" -}}
{{- $p := deepCopy .probe }}
{{- if and .tls.enabled (hasKey $p "httpGet") }}
{{- if .tls.caKey }}
{{- $port := $p.httpGet.port }}
{{- $_ := unset $p "httpGet" }}
{{- $_ := set $p "tcpSocket" (dict "port" $port) }}
{{- else }}
{{- $_ := set $p.httpGet "scheme" "HTTPS" }}
{{- end }}
{{- end }}
{{- toYaml $p }}
{{- end }}

{{/*
kos.goMemLimit is the GOMEMLIMIT the scaler container gets, or "" for none:
goMemLimit when set ("off" for none), else goMemLimitPercent of
resources.limits.memory in MiB. A user's own GOMEMLIMIT in env wins. Why
(README "Scaling out"): without it Go lets the heap reach twice the live
heap, and the capacity sweep saw 2.4 GiB of RSS for a 544 MiB store while
rings grew fast; with it the collector works harder near the limit instead.
*/}}
{{- define "kos.goMemLimit" -}}
{{- $own := false }}
{{- range .Values.env }}{{ if eq (toString .name) "GOMEMLIMIT" }}{{ $own = true }}{{ end }}{{ end }}
{{- if and (not $own) (ne (toString .Values.goMemLimit) "off") }}
{{- if .Values.goMemLimit }}
{{- .Values.goMemLimit }}
{{- else }}
{{- $lim := "" }}
{{- $lim = toString (dig "limits" "memory" "" (.Values.resources | default dict)) }}
{{- if $lim }}
{{- $m := regexFind "^[0-9]+" $lim }}
{{- $unit := trimPrefix $m $lim }}
{{- $mult := dict "Ki" 0.0009765625 "Mi" 1.0 "Gi" 1024.0 "Ti" 1048576.0 "K" 0.00095367431640625 "M" 0.95367431640625 "G" 953.67431640625 "T" 953674.31640625 }}
{{- if not (hasKey $mult $unit) }}
{{- fail (printf "resources.limits.memory %q: the chart derives GOMEMLIMIT from it and reads only an integer with Ki, Mi, Gi, Ti, K, M, G or T; set goMemLimit" $lim) }}
{{- end }}
{{- $mib := mulf (float64 $m) (get $mult $unit) (divf (float64 .Values.goMemLimitPercent) 100.0) | floor | int64 }}
{{- printf "%dMiB" $mib }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
