{{/*
One webhook of the two configurations. Called with (dict "root" $ "name" ... "path" ... "value"
... "mutating" bool): the namespaces labelled `<namespaceLabel.key>=<value>` are sent to `path`.
*/}}
{{- define "plane-guard.webhook" -}}
{{- $root := .root -}}
{{- $values := $root.Values -}}
- name: {{ .name }}
  clientConfig:
    service:
      name: {{ include "plane-guard.fullname" $root }}
      namespace: {{ $root.Release.Namespace }}
      port: 443
      path: {{ .path }}
    {{- if eq $values.certificates.source "existingSecret" }}
    caBundle: {{ required "certificates.existingSecret.caBundle is required with certificates.source=existingSecret: the base64 of the PEM CA that signed the Secret's certificate" $values.certificates.existingSecret.caBundle }}
    {{- end }}
  # Opt-in by namespace label; never the control plane's own namespaces, nor the release's (the
  # webhook must be able to start while its webhook is down).
  namespaceSelector:
    matchExpressions:
      - key: {{ $values.namespaceLabel.key }}
        operator: In
        values: [{{ .value | quote }}]
      - key: kubernetes.io/metadata.name
        operator: NotIn
        values: {{ concat $values.webhooks.excludedNamespaces (list $root.Release.Namespace) | uniq | toJson }}
  # Per-pod opt-out: a pod labelled plane-guard.io/inject=false|disabled|off|no is skipped.
  objectSelector:
    matchExpressions:
      - key: plane-guard.io/inject
        operator: NotIn
        values: ["disabled", "false", "no", "off"]
  rules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["CREATE"]
      resources: ["pods"]
      scope: Namespaced
  # Only pods with a Plane backend image reach the webhook (Kubernetes 1.28+).
  matchConditions:
    {{- include "plane-guard.matchConditions" $root | trim | nindent 4 }}
  matchPolicy: Equivalent
  sideEffects: None
  admissionReviewVersions: ["v1", "v1beta1"]
  timeoutSeconds: {{ $values.webhooks.timeoutSeconds }}
  failurePolicy: {{ $values.webhooks.failurePolicy }}
  {{- if .mutating }}
  reinvocationPolicy: IfNeeded
  {{- end }}
{{- end -}}
