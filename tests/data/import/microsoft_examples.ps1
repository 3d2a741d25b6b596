# Syntax forms from Microsoft's documentation of these cmdlets (Exchange Server 2019).
New-ReceiveConnector -Name "Contoso.com Receive Connector" -Custom -Bindings 10.0.0.1:25 -RemoteIPRanges 192.168.0.1-192.168.0.24,192.168.0.100 -TransportRole FrontendTransport
New-ReceiveConnector "Internal Apps" -Usage Custom -TransportRole FrontendTransport -Bindings 0.0.0.0:2526 `
    -RemoteIPRanges 192.168.5.0/24, '192.168.6.0(255.255.255.0)', "2001:db8::/32", fe80::39bd:88f7:6969:d223%11
Set-ReceiveConnector "Internal Apps" -Bindings "0.0.0.0:2526","[::]:2526"
Set-ReceiveConnector "Contoso.com Receive Connector" -Banner "220 SMTP Server Ready" -ConnectionTimeout 00:15:00
Set-ReceiveConnector -Identity "Contoso.com Receive Connector" -RemoteIPRanges @{Add="192.168.0.200"; Remove="192.168.0.100"}
Set-ReceiveConnector "Contoso.com Receive Connector" -MaxMessageSize 50MB -MaxRecipientsPerMessage:500 -RequireTLS:$false
Set-ReceiveConnector 'Internal Apps' -PermissionGroups AnonymousUsers -MessageRateLimit unlimited
Add-ADPermission -Identity "Internal Apps" -User 'NT AUTHORITY\Anonymous Logon' -ExtendedRights ms-Exch-SMTP-Accept-Any-Recipient,SMTP-Accept-Any-Sender
Get-ReceiveConnector "Contoso.com Receive Connector" | Add-ADPermission -User "NT AUTHORITY\ANONYMOUS LOGON" -ExtendedRights "ms-exch-smtp-submit" -Deny
New-AcceptedDomain -Name "Contoso" -DomainName contoso.com -DomainType Authoritative
New-AcceptedDomain -Name "Fabrikam Relay" -DomainName *.fabrikam.com -DomainType InternalRelay
Set-AcceptedDomain "Fabrikam Relay" -DomainType ExternalRelay
Remove-AcceptedDomain "labs.local" -Confirm:$false
