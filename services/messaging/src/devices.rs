//! The envelope-set check against the destination's current devices.

use std::collections::BTreeMap;

use guardyn_common::DeviceId;
use guardyn_common::mesh::DeviceEntry;

/// How a send's envelopes differ from the destination's current devices (device ids).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceMismatch {
    /// Current devices the send did not address.
    pub missing: Vec<u32>,
    /// Addressed devices that do not exist (any more).
    pub extra: Vec<u32>,
    /// Addressed devices whose registration id changed (re-installed).
    pub stale: Vec<u32>,
}

/// Compare the (device id, registration id) pairs a sender addressed with the destination's
/// current devices. `exclude` is the sending device on a sync send to the own account.
/// Returns `None` when they match exactly.
pub(crate) fn mismatch(
    addressed: &[(DeviceId, u32)],
    current: &[DeviceEntry],
    exclude: Option<DeviceId>,
) -> Option<DeviceMismatch> {
    let current: BTreeMap<u32, u32> = current
        .iter()
        .filter(|d| Some(d.device_id) != exclude.map(DeviceId::get))
        .map(|d| (d.device_id, d.registration_id))
        .collect();
    let addressed: BTreeMap<u32, u32> = addressed.iter().map(|(d, r)| (d.get(), *r)).collect();
    let missing_devices: Vec<u32> = current
        .keys()
        .filter(|d| !addressed.contains_key(d))
        .copied()
        .collect();
    let mut extra_devices = Vec::new();
    let mut stale_devices = Vec::new();
    for (device, registration) in &addressed {
        match current.get(device) {
            None => extra_devices.push(*device),
            Some(r) if r != registration => stale_devices.push(*device),
            Some(_) => {}
        }
    }
    if missing_devices.is_empty() && extra_devices.is_empty() && stale_devices.is_empty() {
        None
    } else {
        Some(DeviceMismatch {
            missing: missing_devices,
            extra: extra_devices,
            stale: stale_devices,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn dev(device_id: u32, registration_id: u32) -> DeviceEntry {
        DeviceEntry {
            device_id,
            registration_id,
        }
    }

    #[test]
    fn reports_each_kind_and_excludes_the_sender() {
        let current = [dev(1, 10), dev(2, 20), dev(3, 30)];
        let d = |n| DeviceId::new(n).unwrap();
        assert_eq!(
            mismatch(&[(d(1), 10), (d(2), 20), (d(3), 30)], &current, None),
            None
        );
        let m = mismatch(&[(d(1), 10), (d(3), 31), (d(4), 40)], &current, None).unwrap();
        assert_eq!(m.missing, vec![2]);
        assert_eq!(m.extra, vec![4]);
        assert_eq!(m.stale, vec![3]);
        assert_eq!(
            mismatch(&[(d(2), 20), (d(3), 30)], &current, Some(d(1))),
            None
        );
        let m = mismatch(&[(d(1), 10), (d(2), 20), (d(3), 30)], &current, Some(d(1))).unwrap();
        assert_eq!(m.extra, vec![1]);
    }
}
