# Microsoft's documented New-SendConnector / Set-SendConnector examples (Exchange Server
# PowerShell reference; example 1 as published, examples 2 and Set-SendConnector as the current
# reference words them, not checked verbatim here), then the three typical setups of
# docs/send-connectors.md.

# Example 1: over the Internet, only for two domains
New-SendConnector -Internet -Name MySendConnector -AddressSpaces contoso.com,fabrikam.com

# Example 2: basic authentication with a credential object (the secret is never imported)
$CredentialObject = Get-Credential
New-SendConnector -Name "Secure Email to Contoso.com" -AddressSpaces contoso.com -AuthenticationCredential $CredentialObject -SmartHostAuthMechanism BasicAuth

# Set-SendConnector example: a smaller size limit and a longer inactivity time-out
Set-SendConnector "Secure Email to Contoso.com" -MaxMessageSize 10MB -ConnectionInactivityTimeOut 00:15:00

# the three typical setups
New-SendConnector -Name "To Internet" -Usage Internet -AddressSpaces "SMTP:*;1" -DNSRoutingEnabled $true -SourceTransportServers EXCH01
New-SendConnector -Name "Smart Host" -Usage Custom -AddressSpaces "SMTP:*.example;5" -SmartHosts relay.isp.example -DNSRoutingEnabled $false -Port 587 -RequireTLS $true -SmartHostAuthMechanism BasicAuthRequireTLS -AuthenticationCredential (Get-Credential)
New-SendConnector -Name "Outbound to Office 365" -AddressSpaces contoso.mail.onmicrosoft.com -SmartHosts contoso-com.mail.protection.outlook.com -DNSRoutingEnabled $false -RequireTLS $true -TlsAuthLevel DomainValidation -TlsDomain mail.protection.outlook.com -CloudServicesMailEnabled $true -Fqdn mail.contoso.com
