# Node B of the same pool, as an admin left it: one relay address missing, the Accept-Any-Sender right added
# on the relay connector, and the scanner connector never created.
New-ReceiveConnector -Name "Anon Relay EXB" -Server EXB -TransportRole FrontendTransport -Custom -Bindings 0.0.0.0:25 -RemoteIPRanges 192.168.0.30
Set-ReceiveConnector "EXB\Anon Relay EXB" -PermissionGroups AnonymousUsers
Get-ReceiveConnector "EXB\Anon Relay EXB" | Add-ADPermission -User 'NT AUTHORITY\Anonymous Logon' -ExtendedRights MS-Exch-SMTP-Accept-Any-Recipient
Get-ReceiveConnector "EXB\Anon Relay EXB" | Add-ADPermission -User 'NT AUTHORITY\Anonymous Logon' -ExtendedRights MS-Exch-SMTP-Accept-Any-Sender
