//! People: console users (create, list, passwords, disable), one-time
//! sign-in links, and sessions (sign in, find, sign out). The console and
//! the CLI call these; every change is audited.
//!
//! Only global admins (`*=admin`, the command line included) manage
//! users: create, list, disable, give a sign-in link to, reset a password.
//! A namespace admin who could sign in as a person could vote as that
//! person, and one admin would meet `consensus:2` of humans alone. A user
//! may change its own password (giving the current one) and end its own
//! sessions.

use super::{Service, ServiceError, invalid, model};
use crate::audit::Record;
use crate::auth::sessions::{self, Session, SessionSettings, SignInLink};
use crate::auth::users::{self, User, UserInfo};
use crate::auth::{Grant, Principal};
use crate::crypto::DataKey;
use crate::store::{StoreError, Tables, Transaction, WriteFlags, del_in, get_in};

/// Why a sign-in or a session was not accepted. The browser is told only
/// "not signed in"; the reason goes to the audit log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignInFailure {
    /// No such user, or the password does not match.
    #[error("wrong user name or password")]
    WrongPassword,
    /// The user is disabled.
    #[error("user \"{0}\" is disabled")]
    Disabled(String),
    /// The link was used, never existed, or expired.
    #[error("the sign-in link is not valid (used, expired or unknown)")]
    BadLink,
    /// Too many failed sign-ins for the name: not even checked.
    #[error("{0}")]
    Throttled(String),
    /// The session is unknown, ended or timed out.
    #[error("the session has ended")]
    NoSession,
    /// The store failed.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<ServiceError> for SignInFailure {
    fn from(e: ServiceError) -> Self {
        SignInFailure::Internal(e.to_string())
    }
}

impl From<StoreError> for SignInFailure {
    fn from(e: StoreError) -> Self {
        SignInFailure::Internal(e.to_string())
    }
}

/// A new session: the token for the cookie, and what is stored.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// The cookie's value (`mhs_…`), shown once.
    pub token: String,
    /// The session.
    pub session: Session,
    /// Its user.
    pub user: User,
}

/// User `name` as it is inside `txn`.
fn user_in(
    txn: &impl Transaction,
    t: &Tables,
    system: &DataKey,
    name: &str,
) -> Result<Option<User>, StoreError> {
    super::access::sealed_in(txn, t, system, &users::row(name))
}

impl Service {
    fn load_user(&self, name: &str) -> Result<Option<User>, ServiceError> {
        if !users::valid_name(name) {
            return Ok(None);
        }
        self.principal_row(&users::row(name))
    }

    /// Does user `name` exist and is it not disabled?
    pub(super) fn user_active(&self, name: &str) -> Result<bool, ServiceError> {
        Ok(self
            .load_user(name)?
            .is_some_and(|u| u.disabled_at.is_none()))
    }

    pub(super) fn all_users(&self) -> Result<Vec<User>, ServiceError> {
        Ok(self
            .principal_rows(b"user/")?
            .into_iter()
            .map(|(_, u)| u)
            .collect())
    }

    /// Write `user` (audited as `record`); `create`: refuse if the name is
    /// taken.
    fn put_user(&self, user: &User, record: Record, create: bool) -> Result<(), ServiceError> {
        if !self.put_principal_row(users::row(&user.name), user, record, create)? {
            return Err(ServiceError::Conflict(format!(
                "user \"{}\" already exists",
                user.name
            )));
        }
        Ok(())
    }

    /// Refuse (audited) unless `who` is a global admin: who the people
    /// are is the operator's to decide.
    fn user_admin(
        &self,
        who: &Principal,
        action: &str,
        target: Option<&str>,
    ) -> Result<(), ServiceError> {
        if who.is_global_admin() {
            return Ok(());
        }
        let mut record = Record::by(who, action).outcome("denied", None);
        record.target = target.map(str::to_string);
        Err(self.deny(
            record,
            format!(
                "{} is not a global admin (*=admin): only they manage the people who sign in",
                who.key_id
            ),
        ))
    }

    /// User `name`, for a global admin to manage.
    fn managed_user(
        &self,
        who: &Principal,
        name: &str,
        action: &str,
    ) -> Result<User, ServiceError> {
        self.user_admin(who, action, Some(name))?;
        self.load_user(name)?.ok_or_else(|| ServiceError::Invalid {
            field: "user".into(),
            detail: format!("user \"{name}\" does not exist"),
        })
    }

    /// Create console user `name` with `grants` and, optionally, a
    /// password. Global admins only.
    pub fn create_user(
        &self,
        who: &Principal,
        name: &str,
        grants: Vec<Grant>,
        password: Option<&str>,
    ) -> Result<UserInfo, ServiceError> {
        if !users::valid_name(name) {
            return Err(invalid(
                "name",
                "must be 1-64 lowercase letters, digits, '.', '_', '-', '@' or '+', starting with a letter or digit",
            ));
        }
        if grants.is_empty() || grants.len() > crate::auth::keys::MAX_GRANTS {
            return Err(invalid(
                "roles",
                format!(
                    "give 1-{} roles, e.g. team-a=reader",
                    crate::auth::keys::MAX_GRANTS
                ),
            ));
        }
        let wanted = crate::auth::describe(&grants);
        self.user_admin(who, "user.create", Some(name))?;
        let password = match password {
            Some(p) => {
                users::check_password(p).map_err(|why| invalid("password", why))?;
                Some(users::hash_password(p).map_err(ServiceError::Internal)?)
            }
            None => None,
        };
        let user = User {
            name: name.into(),
            grants,
            password,
            created_at: model::now_ms(),
            created_by: who.agent_id.clone(),
            disabled_at: None,
            session_epoch: 0,
        };
        let record = Record::by(who, "user.create")
            .target(name)
            .outcome("ok", Some(wanted));
        self.put_user(&user, record, true)?;
        Ok(user.info())
    }

    /// Every user, by name. Global admins only.
    pub fn users(&self, who: &Principal) -> Result<Vec<UserInfo>, ServiceError> {
        self.user_admin(who, "user.list", None)?;
        let mut out: Vec<UserInfo> = self.all_users()?.iter().map(User::info).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Is there any console user at all?
    pub fn has_users(&self) -> Result<bool, ServiceError> {
        Ok(!self
            .store
            .rows_max(|t| t.principals, b"user/", |k| k.starts_with(b"user/"), 1)?
            .is_empty())
    }

    /// Set user `name`'s password. The user itself (with `current`, its
    /// present password, when it has one) or an admin over its roles.
    /// Every session of the user ends.
    pub fn set_password(
        &self,
        who: &Principal,
        name: &str,
        current: Option<&str>,
        password: &str,
    ) -> Result<(), ServiceError> {
        let own = who.key_id == users::credential_id(name);
        let mut user = if own {
            let user = self
                .load_user(name)?
                .ok_or_else(|| ServiceError::Forbidden(format!("user \"{name}\" is gone")))?;
            // A stolen session alone cannot take the account over.
            if user.password.is_some() && !current.is_some_and(|c| user.verify_password(c)) {
                return Err(self.deny(
                    Record::by(who, "user.password")
                        .target(name)
                        .outcome("denied", Some("the current password did not match".into())),
                    "the current password does not match".into(),
                ));
            }
            user
        } else {
            self.managed_user(who, name, "user.password")?
        };
        users::check_password(password).map_err(|why| invalid("password", why))?;
        user.password = Some(users::hash_password(password).map_err(ServiceError::Internal)?);
        // Sessions begun before now end; the caller's own stays when it is
        // the user's (it just proved itself).
        user.session_epoch += 1;
        self.put_user(&user, Record::by(who, "user.password").target(name), false)
    }

    /// Disable user `name`: no more sign-ins, every session over.
    pub fn disable_user(&self, who: &Principal, name: &str) -> Result<UserInfo, ServiceError> {
        let mut user = self.managed_user(who, name, "user.disable")?;
        if who.key_id == users::credential_id(name) {
            return Err(invalid("user", "you cannot disable yourself"));
        }
        let now = model::now_ms();
        user.disabled_at.get_or_insert(now);
        user.session_epoch += 1;
        self.put_user(&user, Record::by(who, "user.disable").target(name), false)?;
        // The keys the person made in the console go with them (and what
        // those keys minted: revoking cascades).
        let credential = users::credential_id(name);
        let made: Vec<String> = self
            .all_keys()?
            .into_iter()
            .filter(|k| {
                k.fields.created_by_key.as_deref() == Some(credential.as_str())
                    && k.fields.revoked_at.is_none()
            })
            .map(|k| k.fields.id)
            .collect();
        for id in made {
            self.revoke_key(who, &id)?;
        }
        Ok(user.info())
    }

    /// End every session of user `name` (the user itself, or an admin over
    /// its roles).
    pub fn sign_out_everywhere(&self, who: &Principal, name: &str) -> Result<(), ServiceError> {
        let mut user = if who.key_id == users::credential_id(name) {
            self.load_user(name)?
                .ok_or_else(|| ServiceError::Forbidden(format!("user \"{name}\" is gone")))?
        } else {
            self.managed_user(who, name, "user.sign-out")?
        };
        user.session_epoch += 1;
        self.put_user(&user, Record::by(who, "user.sign-out").target(name), false)
    }

    /// A one-time sign-in link token for user `name`, valid for `valid_ms`
    /// (1 s to 24 h), until the returned time (Unix ms).
    pub fn sign_in_link(
        &self,
        who: &Principal,
        name: &str,
        valid_ms: i64,
    ) -> Result<(String, i64), ServiceError> {
        if !(1000..=86_400_000).contains(&valid_ms) {
            return Err(invalid(
                "valid",
                "a sign-in link works from 1 second to 24 hours",
            ));
        }
        let user = self.managed_user(who, name, "user.link")?;
        if user.disabled_at.is_some() {
            return Err(ServiceError::Conflict(format!(
                "user \"{name}\" is disabled"
            )));
        }
        let now = model::now_ms();
        let link = SignInLink {
            user: name.into(),
            created_at: now,
            expires_at: now + valid_ms,
            created_by: who.agent_id.clone(),
            epoch: user.session_epoch,
        };
        let token = sessions::new_token(sessions::LINK_PREFIX);
        let record = Record::by(who, "user.link")
            .target(name)
            .outcome("ok", Some(format!("valid {} s", valid_ms / 1000)));
        // 256 random bits: a fresh row.
        self.put_principal_row(sessions::link_row(&token), &link, record, true)?;
        Ok((token, link.expires_at))
    }

    /// Who link `token` would sign in, without using it (the page that
    /// asks "continue as …?": link scanners that follow a URL do not
    /// spend it).
    pub fn peek_link(&self, token: &str) -> Result<String, SignInFailure> {
        if !sessions::well_formed(token, sessions::LINK_PREFIX) {
            return Err(SignInFailure::BadLink);
        }
        let link: SignInLink = self
            .principal_row(&sessions::link_row(token))?
            .ok_or(SignInFailure::BadLink)?;
        if link.expires_at <= model::now_ms() {
            return Err(SignInFailure::BadLink);
        }
        Ok(link.user)
    }

    /// Spend link `token` and start a session; the link is deleted in the
    /// same write, so two uses cannot both succeed. A failure is not
    /// audited here: see [`Service::sign_in_refused`].
    pub fn use_link(&self, token: &str, source: Option<String>) -> Result<SignedIn, SignInFailure> {
        if !sessions::well_formed(token, sessions::LINK_PREFIX) {
            return Err(SignInFailure::BadLink);
        }
        let system = self.system_key()?;
        let link_row = sessions::link_row(token);
        let now = model::now_ms();
        let session_token = sessions::new_token(sessions::SESSION_PREFIX);
        let session_row = sessions::session_row(&session_token);
        let audit = self.audit.clone();
        let src = source.clone();
        let outcome = self.store.write_blocking(move |txn, t| {
            let Some(sealed) = get_in(txn, t.principals, &link_row)? else {
                return Ok(Err(SignInFailure::BadLink));
            };
            let link: SignInLink = super::open_json(&system, "principals", &link_row, &sealed)
                .map_err(|e| StoreError::Storage(e.to_string()))?;
            txn.del(t.principals, &link_row)?;
            if link.expires_at <= now {
                return Ok(Err(SignInFailure::BadLink));
            }
            let Some(user) = user_in(txn, t, &system, &link.user)? else {
                return Ok(Err(SignInFailure::BadLink));
            };
            if user.disabled_at.is_some() {
                return Ok(Err(SignInFailure::Disabled(user.name)));
            }
            // "Sign out everywhere" and a new password void unused links.
            if link.epoch != user.session_epoch {
                return Ok(Err(SignInFailure::BadLink));
            }
            let session = Session::new(&user.name, user.session_epoch, "link", src.clone(), now);
            let sealed = super::seal_json(&system, "principals", &session_row, &session)
                .map_err(|e| StoreError::Storage(e.to_string()))?;
            txn.put(
                t.principals,
                &session_row,
                &sealed,
                WriteFlags::NO_OVERWRITE,
            )?;
            let mut record = Record::by(&user.principal(), "console.sign-in")
                .outcome("ok", Some("with a one-time link".into()));
            record.source = src.clone();
            let entry = audit.append(txn, t, &record)?;
            Ok(Ok((entry, session, user)))
        })?;
        match outcome {
            Ok((entry, session, user)) => {
                crate::audit::emit(&entry);
                Ok(SignedIn {
                    token: session_token,
                    session,
                    user,
                })
            }
            Err(failure) => Err(failure),
        }
    }

    /// Check `password` for user `name` and start a session. Costs one
    /// Argon2id verification whether or not the user exists. A failure is
    /// not audited here: see [`Service::sign_in_refused`].
    pub fn sign_in_password(
        &self,
        name: &str,
        password: &str,
        source: Option<String>,
    ) -> Result<SignedIn, SignInFailure> {
        let user = self.load_user(name)?;
        let failure = match &user {
            None => {
                users::verify_decoy(password);
                Some(SignInFailure::WrongPassword)
            }
            Some(u) if !u.verify_password(password) => Some(SignInFailure::WrongPassword),
            Some(u) if u.disabled_at.is_some() => Some(SignInFailure::Disabled(u.name.clone())),
            Some(_) => None,
        };
        let (Some(user), None) = (user, failure.clone()) else {
            return Err(failure.unwrap_or(SignInFailure::WrongPassword));
        };
        let now = model::now_ms();
        let session = Session::new(
            &user.name,
            user.session_epoch,
            "password",
            source.clone(),
            now,
        );
        let token = sessions::new_token(sessions::SESSION_PREFIX);
        let mut record = Record::by(&user.principal(), "console.sign-in")
            .outcome("ok", Some("with a password".into()));
        record.source = source;
        // The password took tens of milliseconds to check: the user is read
        // again inside the write, so a new password, a sign-out everywhere
        // or a disable meanwhile wins.
        let row = sessions::session_row(&token);
        let sealed = super::seal_json(&*self.system_key()?, "principals", &row, &session)?;
        let (system, audit, checked) = (self.system_key()?, self.audit.clone(), user.clone());
        let entry = self.store.write_blocking(move |txn, t| {
            let same = user_in(txn, t, &system, &checked.name)?.is_some_and(|u| {
                u.password == checked.password
                    && u.disabled_at.is_none()
                    && u.session_epoch == checked.session_epoch
            });
            if !same {
                return Ok(None);
            }
            txn.put(t.principals, &row, &sealed, WriteFlags::NO_OVERWRITE)?;
            audit.append(txn, t, &record).map(Some)
        })?;
        let Some(entry) = entry else {
            return Err(SignInFailure::WrongPassword);
        };
        crate::audit::emit(&entry);
        Ok(SignedIn {
            token,
            session,
            user,
        })
    }

    /// A refused sign-in, in the audit log (the caller decides which, so
    /// a flood of them does not flood the log).
    pub fn sign_in_refused(&self, name: Option<&str>, source: Option<String>, why: &SignInFailure) {
        let mut record = Record::auth_failure(
            name.map(users::credential_id).as_deref(),
            source,
            &why.to_string(),
        );
        record.action = "console.sign-in".into();
        self.record_event(record);
    }

    /// The session of cookie `token` and its user, if it is still good
    /// under `settings`; its `last_seen` is moved on (at most once a
    /// minute). A session that has ended is deleted.
    pub fn session(
        &self,
        token: &str,
        settings: &SessionSettings,
    ) -> Result<(Session, User), SignInFailure> {
        if !sessions::well_formed(token, sessions::SESSION_PREFIX) {
            return Err(SignInFailure::NoSession);
        }
        let row = sessions::session_row(token);
        let mut session: Session = self.principal_row(&row)?.ok_or(SignInFailure::NoSession)?;
        let now = model::now_ms();
        let user = self.load_user(&session.user)?;
        let good = session.state(settings, now).is_ok()
            && user
                .as_ref()
                .is_some_and(|u| u.disabled_at.is_none() && session.epoch == u.session_epoch);
        let (true, Some(user)) = (good, user) else {
            self.store
                .write_blocking(move |txn, t| del_in(txn, t.principals, &row))?;
            return Err(SignInFailure::NoSession);
        };
        if session.stale(now) {
            session.last_seen = now;
            let sealed = super::seal_json(&*self.system_key()?, "principals", &row, &session)?;
            // Only if it is still there: a sign-out meanwhile wins.
            self.store.write_blocking(move |txn, t| {
                if get_in(txn, t.principals, &row)?.is_some() {
                    txn.put(t.principals, &row, &sealed, WriteFlags::empty())?;
                }
                Ok(())
            })?;
        }
        Ok((session, user))
    }

    /// End the session of cookie `token` (audited as `who`).
    pub fn sign_out(&self, who: &Principal, token: &str) -> Result<(), ServiceError> {
        let row = sessions::session_row(token);
        let record = Record::by(who, "console.sign-out");
        let audit = self.audit.clone();
        let entry = self.store.write_blocking(move |txn, t| {
            del_in(txn, t.principals, &row)?;
            audit.append(txn, t, &record)
        })?;
        crate::audit::emit(&entry);
        Ok(())
    }

    /// Delete sessions and links that can no longer be used (timed out,
    /// expired, signed out everywhere, their user disabled or gone); how
    /// many.
    pub fn purge_sessions(&self, settings: &SessionSettings) -> Result<usize, ServiceError> {
        let now = model::now_ms();
        let mut dead = self.dead_rows(b"link/", |link: &SignInLink| link.expires_at <= now)?;
        let users: std::collections::HashMap<String, User> = self
            .all_users()?
            .into_iter()
            .map(|u| (u.name.clone(), u))
            .collect();
        dead.extend(self.dead_rows(b"session/", |session: &Session| {
            let user_ended = users
                .get(&session.user)
                .is_none_or(|u| u.disabled_at.is_some() || session.epoch != u.session_epoch);
            user_ended || session.state(settings, now).is_err()
        })?);
        self.delete_principal_rows(dead)
    }
}
