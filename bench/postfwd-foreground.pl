#!/usr/bin/perl
# Run Debian's postfwd1 as a foreground process that bench/ starts and stops by PID.
#
# postfwd1 only serves the network with -d, and -d sets Net::Server's "setsid", which
# forks into the background. This shim clears "setsid" just before Net::Server acts on
# it, then runs /usr/sbin/postfwd1 unchanged with the same arguments.
use strict;
use warnings;
require Net::Server;
{
    no warnings 'redefine';
    my $orig = \&Net::Server::post_configure;
    *Net::Server::post_configure = sub {
        my $self = shift;
        $self->{'server'}{'setsid'} = undef;
        return $orig->($self, @_);
    };
}
my $postfwd = $ENV{POSTFWD} || '/usr/sbin/postfwd1';
$0 = $postfwd;
my $rv = do $postfwd;
die "cannot run $postfwd: $@" if $@;
