New-ReceiveConnector -Name "SMTP Relay (EXCH01)" -Server EXCH01 -TransportRole FrontendTransport -Custom -Bindings 0.0.0.0:25 -RemoteIpRanges 10.83.4.56 -PermissionGroups AnonymousUsersIdentity Bindings Enabled-------- -------- -------EXCH01\SMTP Relay (EXCH01) {0.0.0.0:25} True
Get-ReceiveConnector -Identity "SMTP Relay (EXCH01)" | Add-ADPermission -User "NT AUTHORITY\ANONYMOUS LOGON" -ExtendedRights "ms-Exch-SMTP-Accept-Any-Recipient"Identity User Deny Inherited-------- ---- ---- ---------EXCH01\SMTP Relay... NT AUTHORITY\ANON... False False
Get-ReceiveConnector -Identity "SMTP Relay (EXCH01)" | Get-ADPermission | where {$_.extendedrights -like "*Any-Recipient"} | ft -aIdentity User Deny Inherited-------- ---- ---- ---------EXCH01\SMTP Relay (EXCH01) NT AUTHORITY\ANONYMOUS LOGON False False
Set-ReceiveConnector -Identity "SMTP Relay (EXCH01)" -Banner "220 Server EXCH01 SMTP Relay Connector"
Telnet EXCH01 25220 Server EXCH01 SMTP Relay Connector
Telnet EXCH01 25220 EXCH01.labs.local Microsoft ESMTP MAIL Service ready at Thu, 15 Jun 2023 13:04:46 +0200
