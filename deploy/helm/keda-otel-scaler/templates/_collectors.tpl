{{/*
OpenTelemetry Collector layers of the chart (README "Scaling out"):

- kos.fanoutConfig: the collector in every HA pod. It receives OTLP where
  KServe's sidecars send it (the Service's otlp-grpc port) and exports every
  batch to every scaler replica, itself included, through one otlp exporter
  per replica addressed by its stable StatefulSet name.
- kos.routerConfig: the shard router (router.enabled). One pipeline per
  shard keeps the resources whose router.attribute is one of the shard's
  values (a filter processor drops the rest) and exports them to the
  shard's release.

Both put the batch processor (timeout 0: nothing is delayed) in front of
the exporters: it hands each batch to the exporters on its own goroutine,
so an unreachable destination's errors and full queue never reach the
sender, whose retries would otherwise duplicate the batch to every healthy
destination and stall its own queue. Each exporter has a sending queue
(bytes-sized, one consumer so a catching-up replica receives the batches of
a series in order) and retries, so a replica that restarts within the retry
time gets what it missed. test/helm renders these configs, checks them
against the collector binary of test/e2e (`validate`) and keeps
test/e2e/testdata/ha-fanout-collector.yaml and ha-router-collector.yaml,
which test/e2e runs, equal to what they render.
*/}}

{{- define "kos.collectorImage" -}}
{{- $i := .Values.collector.image }}
{{- if $i.digest }}
{{- printf "%s@%s" $i.repository $i.digest }}
{{- else }}
{{- printf "%s:%s" $i.repository $i.tag }}
{{- end }}
{{- end }}

{{/* kos.headlessName is the headless Service of the HA StatefulSet. */}}
{{- define "kos.headlessName" -}}
{{- printf "%s-headless" (include "kos.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* kos.collectorExporter renders one otlp exporter's settings; call with
(dict "root" $ "endpoint" "host:port"). */}}
{{- define "kos.collectorExporter" -}}
{{- $c := .root.Values.collector -}}
endpoint: {{ .endpoint }}
tls:
  insecure: true
compression: {{ $c.compression }}
sending_queue:
  enabled: true
  sizer: bytes
  queue_size: {{ int64 $c.queueBytes }}
  num_consumers: 1
retry_on_failure:
  enabled: true
  initial_interval: 1s
  max_interval: 5s
  max_elapsed_time: {{ $c.retryMaxElapsedTime }}
{{- end }}

{{/* kos.collectorReceivers, kos.collectorProcessors and
kos.collectorTelemetry are what the two layers share. */}}
{{- define "kos.collectorReceivers" -}}
{{- $c := .root.Values.collector -}}
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 0.0.0.0:{{ .port }}
        max_recv_msg_size_mib: {{ int $c.maxRecvMsgSizeMiB }}
{{- end }}

{{- define "kos.collectorProcessors" -}}
{{- $c := .Values.collector -}}
memory_limiter:
  check_interval: 1s
  limit_percentage: {{ int $c.memoryLimitPercentage }}
  spike_limit_percentage: {{ int $c.memorySpikePercentage }}
batch:
  timeout: 0s
{{- end }}

{{- define "kos.collectorTelemetry" -}}
telemetry:
  logs:
    level: info
    encoding: json
  metrics:
    level: basic
    readers:
      - pull:
          exporter:
            prometheus:
              host: 0.0.0.0
              port: 8888
{{- end }}

{{/* kos.fanoutConfig is the HA pods' collector configuration. */}}
{{- define "kos.fanoutConfig" -}}
{{- $root := . -}}
{{- $full := include "kos.fullname" . -}}
{{- $headless := include "kos.headlessName" . -}}
{{- include "kos.collectorReceivers" (dict "root" . "port" .Values.containerPorts.otlpGrpc) }}
processors:
  {{- include "kos.collectorProcessors" . | nindent 2 }}
exporters:
{{- range $i := until (int .Values.ha.replicas) }}
  otlp/{{ $full }}-{{ $i }}:
    {{- $ep := printf "%s-%d.%s.%s.svc.%s:%v" $full $i $headless $root.Release.Namespace $root.Values.ha.clusterDomain $root.Values.ha.scalerOtlpPort }}
    {{- include "kos.collectorExporter" (dict "root" $root "endpoint" $ep) | nindent 4 }}
{{- end }}
service:
  {{- include "kos.collectorTelemetry" . | nindent 2 }}
  pipelines:
    metrics:
      receivers: [otlp]
      processors: [memory_limiter, batch]
      exporters:
{{- range $i := until (int .Values.ha.replicas) }}
        - otlp/{{ $full }}-{{ $i }}
{{- end }}
{{- end }}

{{/* kos.routerConfig is the shard router's collector configuration. */}}
{{- define "kos.routerConfig" -}}
{{- $root := . -}}
{{- $attr := .Values.router.attribute -}}
{{- $all := list -}}
{{- range .Values.router.shards }}{{ $all = concat $all .values }}{{ end -}}
{{- include "kos.collectorReceivers" (dict "root" . "port" .Values.containerPorts.otlpGrpc) }}
processors:
  {{- include "kos.collectorProcessors" . | nindent 2 }}
{{- range .Values.router.shards }}
  filter/{{ .name }}:
    error_mode: propagate
    metrics:
      resource:
        - {{ include "kos.notIn" (dict "attr" $attr "values" .values) | quote }}
{{- end }}
{{- if .Values.router.defaultEndpoint }}
  filter/default:
    error_mode: propagate
    metrics:
      resource:
        - {{ include "kos.in" (dict "attr" $attr "values" $all) | quote }}
{{- end }}
exporters:
{{- range .Values.router.shards }}
  otlp/{{ .name }}:
    {{- include "kos.collectorExporter" (dict "root" $root "endpoint" .endpoint) | nindent 4 }}
{{- end }}
{{- if .Values.router.defaultEndpoint }}
  otlp/default:
    {{- include "kos.collectorExporter" (dict "root" $root "endpoint" .Values.router.defaultEndpoint) | nindent 4 }}
{{- end }}
service:
  {{- include "kos.collectorTelemetry" . | nindent 2 }}
  pipelines:
{{- range .Values.router.shards }}
    metrics/{{ .name }}:
      receivers: [otlp]
      processors: [memory_limiter, filter/{{ .name }}, batch]
      exporters: [otlp/{{ .name }}]
{{- end }}
{{- if .Values.router.defaultEndpoint }}
    metrics/default:
      receivers: [otlp]
      processors: [memory_limiter, filter/default, batch]
      exporters: [otlp/default]
{{- end }}
{{- end }}

{{/* kos.in is an OTTL resource condition true when the attribute is one of
the values; kos.notIn its negation (also true when it is missing). Values
are quoted as OTTL strings. */}}
{{- define "kos.in" -}}
{{- $attr := .attr -}}
{{- $terms := list -}}
{{- range .values }}{{ $terms = append $terms (printf "attributes[%s] == %s" ($attr | toJson) (toString . | toJson)) }}{{ end -}}
{{- if $terms }}{{ join " or " $terms }}{{ else }}false{{ end -}}
{{- end }}

{{- define "kos.notIn" -}}
{{- printf "not (%s)" (include "kos.in" .) -}}
{{- end }}

{{/* kos.collectorContainer is a collector container reading
/etc/otelcol/config.yaml from the volume "collector-config". */}}
{{- define "kos.collectorContainer" -}}
- name: {{ .name }}
  image: {{ include "kos.collectorImage" .root | quote }}
  imagePullPolicy: {{ .root.Values.collector.image.pullPolicy }}
  args:
    - --config=/etc/otelcol/config.yaml
  ports:
    - name: otlp-grpc
      containerPort: {{ .root.Values.containerPorts.otlpGrpc }}
      protocol: TCP
    - name: otelcol-metrics
      containerPort: 8888
      protocol: TCP
  readinessProbe:
    tcpSocket:
      port: otlp-grpc
    periodSeconds: 5
    failureThreshold: 2
  livenessProbe:
    tcpSocket:
      port: otlp-grpc
    initialDelaySeconds: 5
    periodSeconds: 10
    failureThreshold: 3
  {{- with .root.Values.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .root.Values.collector.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    - name: collector-config
      mountPath: /etc/otelcol
      readOnly: true
{{- end }}

{{- define "kos.collectorConfigMapName" -}}
{{- printf "%s-collector" (include "kos.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* kos.haStatefulSetSpec is what the HA StatefulSet's spec adds to the
Deployment's pod template: stable names behind the headless Service, all
replicas started and replaced in parallel, one replica replaced at a time on
upgrades (each new one becomes ready only with fresh data). */}}
{{- define "kos.haStatefulSetSpec" -}}
replicas: {{ .Values.ha.replicas }}
serviceName: {{ include "kos.headlessName" . }}
podManagementPolicy: {{ .Values.ha.podManagementPolicy }}
updateStrategy:
  type: RollingUpdate
{{- end }}
