{{/* The pod of the bootstrap Job and of the renewal CronJob's Jobs: `plane-guard certs bootstrap`. */}}
{{- define "plane-guard.certsPod" -}}
metadata:
  labels:
    app.kubernetes.io/name: {{ include "plane-guard.name" . }}
    app.kubernetes.io/component: certs
    app.kubernetes.io/part-of: plane-guard
    app.kubernetes.io/instance: {{ .Release.Name }}
spec:
  serviceAccountName: {{ include "plane-guard.fullname" . }}
  # This pod, unlike the webhook's, needs the API: Secret and caBundle.
  automountServiceAccountToken: true
  enableServiceLinks: false
  restartPolicy: OnFailure
  {{- include "plane-guard.pullSecrets" . | nindent 2 }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  securityContext:
    {{- include "plane-guard.jobPodSecurityContext" . | nindent 4 }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: certs
      image: {{ include "plane-guard.webhookImage" . }}
      imagePullPolicy: {{ .Values.images.webhook.pullPolicy }}
      command: ["plane-guard", "certs", "bootstrap"]
      args:
        {{- include "plane-guard.certsArgs" . | nindent 8 }}
      env:
        - name: PYTHONDONTWRITEBYTECODE
          value: "1"
      resources:
        {{- toYaml .Values.certificates.selfSigned.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: 16Mi
{{- end -}}
