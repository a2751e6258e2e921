//! A failing audit store, switched on and off while a broker runs, the way an
//! outage or an operator's mistake makes it fail:
//!
//! - PostgreSQL: the broker runs as a role of its own (not the owner), and
//!   `INSERT` on `audit_pending` is revoked from that role;
//! - SQLite: a trigger refuses every insert into `audit_events`.
//!
//! Everything else in the database keeps working.

use std::fmt::Write as _;

use jit_server::store::Store;
use jit_server::store::migrate::APP_GRANTS;

use super::server::{Engine, FreshDb, fresh_db};

/// The message of SQLite's refusing trigger.
pub const SQLITE_REFUSAL: &str = "audit store failing (test fault)";

/// A database prepared for audit faults.
pub struct AuditFault {
    /// The URL the broker connects with (PostgreSQL: as the broker's role).
    pub broker_url: String,
    /// PostgreSQL: the broker's role (`database.app_role`).
    pub role: Option<String>,
    /// The owner's URL (for `jit-server audit verify`).
    pub owner_url: String,
    /// The owner's connection.
    owner: Store,
    engine: Engine,
}

impl AuditFault {
    /// A fresh database, migrated by its owner; on PostgreSQL a login role for
    /// the broker with the rights `serve` has in production
    /// (`store::migrate::APP_GRANTS`, no ownership).
    /// Returns the database's guard too, for the broker to keep.
    pub async fn new(engine: Engine) -> (Self, FreshDb) {
        let db = fresh_db(engine).await;
        let owner = Store::connect(&db.url, 2).await.unwrap();
        owner.migrate().await.unwrap();
        let (broker_url, role) = match engine {
            Engine::Sqlite => (db.url.clone(), None),
            Engine::Postgres => {
                let role = format!(
                    "jit_app_{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..12]
                );
                let dbname = db.url.rsplit('/').next().unwrap().to_owned();
                let mut sql = format!(
                    "CREATE ROLE {role} LOGIN; GRANT CONNECT ON DATABASE {dbname} TO {role}; \
                     GRANT USAGE ON SCHEMA public TO {role}; \
                     GRANT USAGE ON SEQUENCE audit_pending_id_seq TO {role};"
                );
                for (table, rights) in APP_GRANTS {
                    write!(sql, " GRANT {rights} ON {table} TO {role};").unwrap();
                }
                jit_server::store::db::batch(&owner, &sql).await.unwrap();
                let mut url = url::Url::parse(&db.url).unwrap();
                url.set_username(&role).unwrap();
                (url.to_string(), Some(role))
            }
        };
        let fault = Self {
            broker_url,
            role,
            owner_url: db.url.clone(),
            owner,
            engine,
        };
        (fault, db)
    }

    /// Audit writes fail from now on.
    pub async fn fail(&self) {
        let sql = match (&self.engine, &self.role) {
            (Engine::Postgres, Some(role)) => format!("REVOKE INSERT ON audit_pending FROM {role}"),
            _ => format!(
                "CREATE TRIGGER audit_fault BEFORE INSERT ON audit_events \
                 BEGIN SELECT RAISE(ABORT, '{SQLITE_REFUSAL}'); END"
            ),
        };
        jit_server::store::db::batch(&self.owner, &sql)
            .await
            .unwrap();
    }

    /// Audit writes work again.
    pub async fn heal(&self) {
        let sql = match (&self.engine, &self.role) {
            (Engine::Postgres, Some(role)) => format!("GRANT INSERT ON audit_pending TO {role}"),
            _ => "DROP TRIGGER audit_fault".to_owned(),
        };
        jit_server::store::db::batch(&self.owner, &sql)
            .await
            .unwrap();
    }

    /// The owner's store (reads the tables as they are).
    pub fn owner(&self) -> &Store {
        &self.owner
    }
}
