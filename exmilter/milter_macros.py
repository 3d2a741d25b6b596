"""The Postfix macros the milter reads at each stage (postfix-notes §2.2): one list that
render-postfix requests and exmilter.milter.macros reads. Pure."""

from __future__ import annotations

CONNECT = ("j", "{daemon_name}", "{daemon_addr}", "{daemon_port}", "{client_addr}", "{client_port}", "v", "_")
HELO = ("{tls_version}", "{cipher}", "{cipher_bits}", "{cert_subject}", "{cert_issuer}")
MAIL = ("i", "{auth_type}", "{auth_authen}", "{auth_author}", "{mail_addr}")
RCPT = ("i", "{rcpt_addr}")
EOH = ("i",)
EOM = ("i",)
