//! Interface counters of the exporter's own network namespace.
//!
//! Reads `$PROC_PATH/net/dev` (in a container: the container's interfaces, already the guest's
//! view). Produces `node_network_{receive,transmit}_{bytes,packets,errs,drop}_total{device}`.
//!
//! `drop` is /proc/net/dev's column as node_exporter exports it: on receive that is
//! `rx_dropped + rx_missed_errors`, so it can exceed sysfs `statistics/rx_dropped`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::collectors::{Collector, Environment};
use crate::error::{CollectError, read_parsed};
use crate::model::{Kind, LabelValue, MetricDesc, OtelName, Scope, SnapshotBuilder, Unit};
use crate::parse;
use crate::parse::netdev::NetDevStats;

macro_rules! net_desc {
    ($ident:ident, $name:literal, $help:literal, $unit:expr, $otel:literal, $dir:literal) => {
        pub static $ident: MetricDesc = MetricDesc {
            name: $name,
            help: $help,
            kind: Kind::Counter,
            unit: $unit,
            labels: &["device"],
            scope: Scope::Node,
            otel: Some(OtelName {
                name: $otel,
                attributes: &["network.interface.name"],
                fixed: &[("network.io.direction", $dir)],
            }),
        };
    };
}

net_desc!(
    RX_BYTES,
    "node_network_receive_bytes_total",
    "Bytes received.",
    Unit::Bytes,
    "system.network.io",
    "receive"
);
net_desc!(
    TX_BYTES,
    "node_network_transmit_bytes_total",
    "Bytes sent.",
    Unit::Bytes,
    "system.network.io",
    "transmit"
);
net_desc!(
    RX_PACKETS,
    "node_network_receive_packets_total",
    "Packets received.",
    Unit::Count("{packet}"),
    "system.network.packets",
    "receive"
);
net_desc!(
    TX_PACKETS,
    "node_network_transmit_packets_total",
    "Packets sent.",
    Unit::Count("{packet}"),
    "system.network.packets",
    "transmit"
);
net_desc!(
    RX_ERRS,
    "node_network_receive_errs_total",
    "Receive errors.",
    Unit::Count("{error}"),
    "system.network.errors",
    "receive"
);
net_desc!(
    TX_ERRS,
    "node_network_transmit_errs_total",
    "Transmit errors.",
    Unit::Count("{error}"),
    "system.network.errors",
    "transmit"
);
net_desc!(
    RX_DROP,
    "node_network_receive_drop_total",
    "Received packets dropped (/proc/net/dev drop column: rx_dropped + rx_missed_errors).",
    Unit::Count("{packet}"),
    "system.network.dropped",
    "receive"
);
net_desc!(
    TX_DROP,
    "node_network_transmit_drop_total",
    "Packets dropped on transmit.",
    Unit::Count("{packet}"),
    "system.network.dropped",
    "transmit"
);

#[derive(Debug)]
pub struct NetworkCollector {
    path: PathBuf,
}

/// Reads `/proc/net/dev`.
pub fn read_netdev(path: &Path) -> Result<Vec<NetDevStats>, CollectError> {
    read_parsed(path, parse::netdev::parse)
}

impl NetworkCollector {
    pub fn new(env: &Environment) -> Self {
        NetworkCollector {
            path: env.proc_path.join("net/dev"),
        }
    }
}

impl Collector for NetworkCollector {
    fn name(&self) -> &'static str {
        "network"
    }

    fn collect(&mut self, out: &mut SnapshotBuilder) -> Result<(), CollectError> {
        for d in read_netdev(&self.path)? {
            // One label array for the device's eight series (a Proxmox host has a device or
            // four per guest interface).
            let device: Arc<[LabelValue]> = Arc::new([LabelValue::from(d.name.as_str())]);
            for (desc, value) in [
                (&RX_BYTES, d.rx_bytes),
                (&RX_PACKETS, d.rx_packets),
                (&RX_ERRS, d.rx_errs),
                (&RX_DROP, d.rx_drop),
                (&TX_BYTES, d.tx_bytes),
                (&TX_PACKETS, d.tx_packets),
                (&TX_ERRS, d.tx_errs),
                (&TX_DROP, d.tx_drop),
            ] {
                out.push_shared(desc, &device, value as f64);
            }
        }
        Ok(())
    }

    fn notes(&self) -> Vec<String> {
        vec![format!(
            "from {} (this network namespace); drop is the rx_dropped + rx_missed_errors column, as node_exporter",
            self.path.display()
        )]
    }
}
