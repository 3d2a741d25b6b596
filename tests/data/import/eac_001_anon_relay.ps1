# What seed 001 does in the Exchange admin center wizard (not a shell command there):
# Frontend Transport, Custom, default bindings, remote network 192.168.0.30 only.
New-ReceiveConnector -Name "Anon Relay EXSERVER" -Server EXSERVER -TransportRole FrontendTransport -Custom `
    -Bindings 0.0.0.0:25 -RemoteIPRanges 192.168.0.30
