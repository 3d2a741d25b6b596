"""Organization -> Postfix configuration: main.cf settings and one master.cf smtpd service per
listener (docs/render-postfix.md, "Where the code is"). Pure: no I/O; the private Postfix
that runs or checks the output is :mod:`exmilter.sandbox.instance`."""
