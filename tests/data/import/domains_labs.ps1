# The accepted domains of the lab in seed 000 (exchangelabs.nl is the senders' domain there).
New-AcceptedDomain -Name "Exchange Labs" -DomainName exchangelabs.nl -DomainType Authoritative
