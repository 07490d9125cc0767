//! Service load balancing: the model's services become frontends with backend lists
//! ([`frontend`]), which are diffed against the maps' current content into an ordered plan
//! ([`plan`]). Both are pure; `datapath` applies plans.

pub mod addr;
pub mod ext_plan;
pub mod external;
pub mod frontend;
pub mod maglev;
pub mod plan;

pub use frontend::{Frontend, frontends_with};
pub use plan::{LbState, Plan, plan_with};
