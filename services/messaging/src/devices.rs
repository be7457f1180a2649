//! The envelope-set check against the destination's current devices.

use std::collections::BTreeMap;

use guardyn_common::mesh::DeviceEntry;
use guardyn_proto::guardyn::common::v1::DeviceMismatch;

/// Compare the (device id, registration id) pairs a sender addressed with the destination's
/// current devices. `exclude` is the sending device on a sync send to the own account.
/// Returns `None` when they match exactly.
pub(crate) fn mismatch(
    addressed: &[(u32, u32)],
    current: &[DeviceEntry],
    exclude: Option<u32>,
) -> Option<DeviceMismatch> {
    let current: BTreeMap<u32, u32> = current
        .iter()
        .filter(|d| Some(d.device_id) != exclude)
        .map(|d| (d.device_id, d.registration_id))
        .collect();
    let addressed: BTreeMap<u32, u32> = addressed.iter().copied().collect();
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
            missing_devices,
            extra_devices,
            stale_devices,
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
        assert_eq!(mismatch(&[(1, 10), (2, 20), (3, 30)], &current, None), None);
        let m = mismatch(&[(1, 10), (3, 31), (4, 40)], &current, None).unwrap();
        assert_eq!(m.missing_devices, vec![2]);
        assert_eq!(m.extra_devices, vec![4]);
        assert_eq!(m.stale_devices, vec![3]);
        assert_eq!(mismatch(&[(2, 20), (3, 30)], &current, Some(1)), None);
        let m = mismatch(&[(1, 10), (2, 20), (3, 30)], &current, Some(1)).unwrap();
        assert_eq!(m.extra_devices, vec![1]);
    }
}
