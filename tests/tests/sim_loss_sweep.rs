//! The loss sweep of the README: exactly-once at every loss rate, and the latency goal at 5 %.

use driftlog_tests::report::{loss_sweep, render};

#[test]
fn exactly_once_at_every_loss_rate_and_p99_within_3_rtt_at_5_percent() {
    let rows = loss_sweep(1, 2_000).unwrap_or_else(|failure| panic!("{failure}"));
    println!("{}", render(&rows));
    for row in &rows {
        assert_eq!(row.outcome.delivered, row.outcome.enqueued, "{}: every event delivered", row.label);
        assert_eq!(row.outcome.tombstoned, 0, "{}: nothing dropped", row.label);
    }
    let five = rows.iter().find(|r| r.label.starts_with("5 %")).expect("5 % row");
    assert!(five.p99_rtt() <= 3.0, "p99 at 5 % loss is {:.2} RTT", five.p99_rtt());
    let lossless = rows.iter().find(|r| r.label.starts_with("0 %")).expect("0 % row");
    assert!(lossless.p99_rtt() < 0.6, "without loss delivery takes one one-way delay: {:.2}", lossless.p99_rtt());
    assert!(lossless.send_ratio() < 1.01, "spurious retransmissions without loss: {:.3}", lossless.send_ratio());
}
