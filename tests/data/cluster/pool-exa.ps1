# Node A of a load-balanced pool: an anonymous relay connector for two devices and a scanner connector.
New-ReceiveConnector -Name "Anon Relay EXA" -Server EXA -TransportRole FrontendTransport -Custom -Bindings 0.0.0.0:25 -RemoteIPRanges 192.168.0.30,192.168.0.31
Set-ReceiveConnector "EXA\Anon Relay EXA" -PermissionGroups AnonymousUsers
Get-ReceiveConnector "EXA\Anon Relay EXA" | Add-ADPermission -User 'NT AUTHORITY\Anonymous Logon' -ExtendedRights MS-Exch-SMTP-Accept-Any-Recipient
New-ReceiveConnector -Name "Scanners EXA" -Server EXA -TransportRole FrontendTransport -Custom -Bindings 0.0.0.0:25 -RemoteIPRanges 192.168.5.0/24
Set-ReceiveConnector "EXA\Scanners EXA" -PermissionGroups AnonymousUsers
