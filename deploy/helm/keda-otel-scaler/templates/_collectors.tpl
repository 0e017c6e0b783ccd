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

In HA mode with tls.otlp.enabled and/or otlpAuth.enabled the fan-out
collector guards the OTLP port as the scaler would: its otlp receiver serves
the tls.otlp certificate (requiring client certificates signed by
tls.otlp.caKey when that is set) and authenticates every Export with the
bearertokenauth extension reading the same token file (one token a line,
the format both read alike). Its exporters reach the replicas' own port
over TLS (verifying ha.exporterTLS.serverName, by default the Service name
the certificate is issued for), present a client certificate when
tls.otlp.caKey asks for one, and send the token file's first token, so
each replica keeps its TLS and token checks on ha.scalerOtlpPort too.

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

{{/* kos.fanoutSecure is "true" when the HA fan-out guards its OTLP port
with TLS or bearer tokens (and so exports to the replicas with them). */}}
{{- define "kos.fanoutSecure" -}}
{{- if and .Values.ha.enabled (or .Values.tls.otlp.enabled .Values.otlpAuth.enabled) }}true{{ end -}}
{{- end }}

{{/* kos.fanoutClientTLSDir is where the fan-out container mounts the client
certificate it presents to the replicas (ha.exporterTLS.clientSecretName). */}}
{{- define "kos.fanoutClientTLSDir" -}}
/etc/keda-otel-scaler/fanout-client-tls
{{- end }}

{{/* kos.collectorExporter renders one otlp exporter's settings; call with
(dict "root" $ "endpoint" "host:port" "secure" bool). secure: TLS (and the
bearer token) towards a replica of this release, as kos.fanoutConfig
describes. */}}
{{- define "kos.collectorExporter" -}}
{{- $c := .root.Values.collector -}}
{{- $v := .root.Values -}}
endpoint: {{ .endpoint }}
{{- if and .secure $v.tls.otlp.enabled }}
{{- $x := $v.ha.exporterTLS }}
tls:
  ca_file: {{ printf "%s/%s" $v.tls.otlp.mountPath $x.caKey }}
  server_name_override: {{ $x.serverName | default (printf "%s.%s.svc" (include "kos.fullname" .root) .root.Release.Namespace) }}
  {{- if $v.tls.otlp.caKey }}
  {{- if $x.clientSecretName }}
  cert_file: {{ printf "%s/%s" (include "kos.fanoutClientTLSDir" .root) $x.certKey }}
  key_file: {{ printf "%s/%s" (include "kos.fanoutClientTLSDir" .root) $x.keyKey }}
  {{- else }}
  cert_file: {{ printf "%s/%s" $v.tls.otlp.mountPath $v.tls.otlp.certKey }}
  key_file: {{ printf "%s/%s" $v.tls.otlp.mountPath $v.tls.otlp.keyKey }}
  {{- end }}
  {{- end }}
  reload_interval: 1m
{{- else }}
tls:
  insecure: true
{{- end }}
{{- if and .secure $v.otlpAuth.enabled }}
auth:
  authenticator: bearertokenauth/replicas
{{- end }}
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
{{- $v := .root.Values -}}
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 0.0.0.0:{{ .port }}
        max_recv_msg_size_mib: {{ int $c.maxRecvMsgSizeMiB }}
        {{- if and .secure $v.tls.otlp.enabled }}
        tls:
          cert_file: {{ printf "%s/%s" $v.tls.otlp.mountPath $v.tls.otlp.certKey }}
          key_file: {{ printf "%s/%s" $v.tls.otlp.mountPath $v.tls.otlp.keyKey }}
          {{- if $v.tls.otlp.caKey }}
          client_ca_file: {{ printf "%s/%s" $v.tls.otlp.mountPath $v.tls.otlp.caKey }}
          client_ca_file_reload: true
          {{- end }}
          reload_interval: 1m
        {{- end }}
        {{- if and .secure $v.otlpAuth.enabled }}
        auth:
          authenticator: bearertokenauth/senders
        {{- end }}
{{- end }}

{{/* kos.fanoutExtensions: the bearertokenauth extensions of a secured
fan-out, both reading the mounted token file: senders checks what
arrives (any token of the file), replicas sends its first token. */}}
{{- define "kos.fanoutExtensions" -}}
{{- if and (include "kos.fanoutSecure" .) .Values.otlpAuth.enabled }}
{{- $f := printf "%s/%s" .Values.otlpAuth.mountPath .Values.otlpAuth.key }}
extensions:
  bearertokenauth/senders:
    filename: {{ $f }}
  bearertokenauth/replicas:
    filename: {{ $f }}
{{- end }}
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

{{/*
kos.readyPeers is --ready-peers for the HA replicas: every replica's HTTP
listener by its headless-Service name, https when tls.http is enabled. The
same list for every pod; a replica ignores itself (it is not ready while it
polls). Empty unless ha.enabled, ha.readyAfterFresh and ha.readyPeers.
*/}}
{{- define "kos.readyPeers" -}}
{{- if and .Values.ha.enabled .Values.ha.readyAfterFresh .Values.ha.readyPeers -}}
{{- $full := include "kos.fullname" . -}}
{{- $headless := include "kos.headlessName" . -}}
{{- $scheme := ternary "https" "http" (and .Values.tls.http.enabled true) -}}
{{- $urls := list -}}
{{- range $i := until (int .Values.ha.replicas) -}}
{{- $urls = append $urls (printf "%s://%s-%d.%s.%s.svc.%s:%v" $scheme $full $i $headless $.Release.Namespace $.Values.ha.clusterDomain $.Values.containerPorts.http) -}}
{{- end -}}
{{- join "," $urls -}}
{{- end -}}
{{- end }}

{{/* kos.fanoutConfig is the HA pods' collector configuration. */}}
{{- define "kos.fanoutConfig" -}}
{{- $root := . -}}
{{- $full := include "kos.fullname" . -}}
{{- $headless := include "kos.headlessName" . -}}
{{- $secure := include "kos.fanoutSecure" . | eq "true" -}}
{{- $ext := include "kos.fanoutExtensions" . | trim -}}
{{- if $ext }}{{ $ext }}
{{ end -}}
{{- include "kos.collectorReceivers" (dict "root" . "port" .Values.containerPorts.otlpGrpc "secure" $secure) }}
processors:
  {{- include "kos.collectorProcessors" . | nindent 2 }}
exporters:
{{- range $i := until (int .Values.ha.replicas) }}
  otlp/{{ $full }}-{{ $i }}:
    {{- $ep := printf "%s-%d.%s.%s.svc.%s:%v" $full $i $headless $root.Release.Namespace $root.Values.ha.clusterDomain $root.Values.ha.scalerOtlpPort }}
    {{- include "kos.collectorExporter" (dict "root" $root "endpoint" $ep "secure" $secure) | nindent 4 }}
{{- end }}
service:
  {{- if and $secure .Values.otlpAuth.enabled }}
  extensions: [bearertokenauth/senders, bearertokenauth/replicas]
  {{- end }}
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
{{- include "kos.collectorReceivers" (dict "root" . "port" .Values.containerPorts.otlpGrpc "secure" false) }}
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
    {{- include "kos.collectorExporter" (dict "root" $root "endpoint" .endpoint "secure" false) | nindent 4 }}
{{- end }}
{{- if .Values.router.defaultEndpoint }}
  otlp/default:
    {{- include "kos.collectorExporter" (dict "root" $root "endpoint" .Values.router.defaultEndpoint "secure" false) | nindent 4 }}
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
    {{- $v := .root.Values }}
    {{- if and (eq .name "fanout") (include "kos.fanoutSecure" .root) }}
    {{- if $v.tls.otlp.enabled }}
    - name: tls-otlp
      mountPath: {{ $v.tls.otlp.mountPath }}
      readOnly: true
    {{- if and $v.tls.otlp.caKey $v.ha.exporterTLS.clientSecretName }}
    - name: fanout-client-tls
      mountPath: {{ include "kos.fanoutClientTLSDir" .root }}
      readOnly: true
    {{- end }}
    {{- end }}
    {{- if $v.otlpAuth.enabled }}
    - name: otlp-auth
      mountPath: {{ $v.otlpAuth.mountPath }}
      readOnly: true
    {{- end }}
    {{- end }}
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
