//! DEL: idempotent teardown. Deletes the host end of the veth pair (the pod end, its addresses
//! and routes go with it; if the netns is already gone the kernel has removed both), then
//! releases the attachment's addresses.

use tracing::info;

use crate::cni::config::NetConf;
use crate::cni::env::CniEnv;
use crate::cni::error::CniError;
use crate::cni::ipam::{LOCK_TIMEOUT, Store};
use crate::cni::netlink::Net;
use crate::cni::plan::host_ifname;

use super::attachment;

pub fn run(env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
    let a = attachment(env)?;
    let net = Net::new()?;
    let veth = host_ifname(a);
    // An address is released only once no interface can carry it any more.
    let deleted = net.del_link(net.host(), &veth)?;
    let store = Store::new(&conf.state_dir, &conf.name);
    let locked = store.lock(LOCK_TIMEOUT)?;
    let mut state = locked.load()?;
    let released = state.release(a);
    if !released.is_empty() {
        locked.save_atomic(&state)?;
    }
    info!(
        container = %a.container_id,
        ifname = %a.ifname,
        veth_deleted = deleted,
        released = ?released.iter().map(|r| r.ip.to_string()).collect::<Vec<_>>(),
        "DEL"
    );
    Ok(())
}
