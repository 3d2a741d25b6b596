"""The Postfix side of exmilter: rendering main.cf/master.cf and running a private instance."""
