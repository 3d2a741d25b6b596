New-ReceiveConnector -Name "SMTP Relay Script" -Server CMHYBD01 -TransportRole FrontendTransport -Usage Custom -Bindings 0.0.0.0:2526 -RemoteIPRanges 192.168.1.13
Set-ReceiveConnector "SMTP Relay Script" -PermissionGroups AnonymousUsers
Get-ReceiveConnector "SMTP Relay Script" | Add-ADPermission -User "NT AUTHORITY\ANONYMOUS LOGON" -ExtendedRights "Ms-Exch-SMTP-Accept-Any-Recipient"
Send-MailMessage -From "test@cloudmonkeys.xyz" -To "user@cloudmonkeys.xyz" -Subject "Anonymous Test" -Body "Test" -SmtpServer CMHYBD01 -Port 2526
Get-MessageTrackingLog -Start (Get-Date).AddMinutes(-10)
New-ReceiveConnector -Name "SMTP Auth Relay Script" -Server CMHYBD01 -TransportRole FrontendTransport -Usage Custom -Bindings 0.0.0.0:587 -RemoteIPRanges 192.168.1.13
Set-ReceiveConnector "SMTP Auth Relay Script" -AuthMechanism Tls,BasicAuth,BasicAuthRequireTLS -PermissionGroups ExchangeUsers
Set-ReceiveConnector "SMTP Auth Relay Script" -RequireTLS $true
Add-ADPermission -Identity smb1 -User svc-mailer -ExtendedRights "Send As"
$cred = Get-Credential
Send-MailMessage -From "smb1@cloudmonkeys.xyz" -To "raghu@cloudmonkeys.xyz" -Subject "Auth Test" -Body "Test" -SmtpServer CMHYBD01 -Port 587 -UseSsl -Credential $cred
Get-MessageTrackingLog -Start (Get-Date).AddMinutes(-10)
