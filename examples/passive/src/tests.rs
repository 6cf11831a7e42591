//! The passive server driven natively, with the SDK's `TestHost` standing in for the host.

use super::Passive;
use tasuki_guest::testing::{ListenPolicy, TestHost};

#[test]
fn a_data_connection_to_the_port_asked_for_gets_the_data_and_the_port_closes() {
    let mut host = TestHost::<Passive>::new();
    let control = host.connect();
    host.send(control, "PUT hello\nPASV\n");
    assert_eq!(host.read_string(control), "OK\nPORT 1 49152\n");
    assert_eq!(host.listeners(), [(1, "127.0.0.1:49152".to_string())]);
    let data = host.connect_to(1);
    assert_eq!(host.read_string(data), "DATA 1 hello\n");
    assert!(host.closed_by_app(data));
    assert_eq!(host.read_string(control), "SENT 1\n");
    assert!(host.listeners().is_empty(), "a PASV port takes one connection");
}

#[test]
fn a_listener_crosses_an_upgrade_and_the_new_version_knows_its_connections() {
    let mut host = TestHost::<Passive>::new();
    let control = host.connect();
    host.send(control, "LISTEN\n");
    assert_eq!(host.read_string(control), "PORT 1 49152\n");
    let mut host = host.upgrade::<Passive>().expect("the upgrade");
    let data = host.connect_to(1);
    assert_eq!(host.read_string(data), "DATA 1 \n");
    host.send(control, "PASV\n");
    assert_eq!(host.read_string(control), "SENT 1\nPORT 2 49153\n", "ids are not reused");
    host.send(control, "CLOSE 1\nINFO\n");
    assert_eq!(host.read_string(control), "CLOSED 1\npassive 1.0.0 served=1 listeners=1 lost=0\n");
    assert_eq!(host.listeners(), [(2, "127.0.0.1:49153".to_string())]);
}

#[test]
fn a_refusal_reaches_the_session_that_asked() {
    let mut host = TestHost::<Passive>::new();
    host.set_listen_policy(ListenPolicy { max: 1, ports: Some(50000..=50001) });
    let control = host.connect();
    host.send(control, "LISTEN\nLISTEN\nPASV 21\n");
    assert_eq!(
        host.read_string(control),
        "PORT 1 50000\nERR 1 listeners are open, the most the host allows (--max-listeners)\n\
         ERR 1 listeners are open, the most the host allows (--max-listeners)\n"
    );
    host.set_listen_policy(ListenPolicy { max: 4, ports: Some(50000..=50001) });
    host.send(control, "PASV 21\nLISTEN 50000\n");
    assert_eq!(
        host.read_string(control),
        "ERR not allowed: port 21 is not allowed\nERR in use: port 50000 is in use\n"
    );
}

#[test]
fn a_session_that_goes_away_closes_its_ports_and_a_restore_loses_them() {
    let mut host = TestHost::<Passive>::new();
    let a = host.connect();
    let b = host.connect();
    host.send(a, "LISTEN\n");
    host.send(b, "LISTEN\n");
    host.disconnect(a);
    assert_eq!(host.listeners(), [(2, "127.0.0.1:49153".to_string())]);
    host.lose_listeners();
    host.send(b, "INFO\n");
    assert_eq!(host.read_string(b), "PORT 2 49153\npassive 1.0.0 served=0 listeners=0 lost=1\n");
}

#[test]
fn a_port_closed_in_the_event_that_asked_for_it_is_never_announced() {
    let mut host = TestHost::<Passive>::new();
    let control = host.connect();
    host.send(control, "PASV\nCLOSE 1\n");
    assert_eq!(host.read_string(control), "CLOSED 1\n");
    assert!(host.listeners().is_empty());
    host.send(control, "PASV\n");
    assert_eq!(host.read_string(control), "PORT 2 49152\n", "its port is free again");
}
