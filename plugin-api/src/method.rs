//! Declaring methods: one [`Method`] per method, registered with [`register_method!`](crate::register_method).

use abi_stable::std_types::RString;

use crate::{
    Architecture, Error, Fusion, Grouping, Host, MethodContext, MethodManifest, Result, Role,
    Strategy, Weighting,
};

/// Builds a method object from its validated config (defaults filled in).
pub type CreateFn<T> = fn(&serde_json::Value, &MethodContext, &Host) -> Result<Box<T>>;

/// A method's constructor, which also fixes its role.
#[derive(Clone, Copy)]
pub enum Constructor {
    /// Creates a [`Weighting`].
    Weighting(CreateFn<dyn Weighting>),
    /// Creates a [`Strategy`].
    Strategy(CreateFn<dyn Strategy>),
    /// Creates an [`Architecture`].
    Architecture(CreateFn<dyn Architecture>),
    /// Creates a [`Fusion`].
    Fusion(CreateFn<dyn Fusion>),
    /// Creates a [`Grouping`].
    Grouping(CreateFn<dyn Grouping>),
}

/// A method as its library declares it. Built-in methods of the runtime and
/// methods of dynamic plugins are declared the same way.
pub struct Method {
    /// The name pipelines use in `kind = "..."`.
    pub name: &'static str,
    /// The method's version, usually `env!("CARGO_PKG_VERSION")`.
    pub version: &'static str,
    /// One line on what it computes.
    pub description: &'static str,
    /// Returns the JSON Schema of the config table (see the crate docs).
    pub schema: fn() -> serde_json::Value,
    /// Creates the method.
    pub constructor: Constructor,
}

inventory::collect!(Method);

/// Registers a [`Method`] so that the library's root module (or, in the runtime,
/// the built-in registry) lists it. Use it at module level, once per method.
#[macro_export]
macro_rules! register_method {
    ($method:expr $(,)?) => {
        $crate::inventory::submit! { $method }
    };
}

/// Splits a method table (`{"kind": "pcgrad", ...}`) into the kind and the
/// method's config (the table without `kind`).
pub fn split_table(role: Role, table: &serde_json::Value) -> Result<(String, serde_json::Value)> {
    let kind = table
        .get("kind")
        .and_then(|k| k.as_str())
        .ok_or_else(|| Error::msg(format!("a {role} table needs a string `kind`, got {table}")))?;
    let mut config = table.clone();
    if let Some(map) = config.as_object_mut() {
        map.remove("kind");
    }
    Ok((kind.to_string(), config))
}

/// Every method registered in this library (for a plugin: in this `.so`).
pub fn registered() -> impl Iterator<Item = &'static Method> {
    inventory::iter::<Method>.into_iter()
}

impl Method {
    /// A method with the given name, version, description, schema and constructor.
    pub const fn new(
        name: &'static str,
        version: &'static str,
        description: &'static str,
        schema: fn() -> serde_json::Value,
        constructor: Constructor,
    ) -> Method {
        Method {
            name,
            version,
            description,
            schema,
            constructor,
        }
    }

    /// The role the constructor fixes.
    pub fn role(&self) -> Role {
        match self.constructor {
            Constructor::Weighting(_) => Role::Weighting,
            Constructor::Strategy(_) => Role::Strategy,
            Constructor::Architecture(_) => Role::Architecture,
            Constructor::Fusion(_) => Role::Fusion,
            Constructor::Grouping(_) => Role::Grouping,
        }
    }

    /// The method's manifest.
    pub fn manifest(&self) -> MethodManifest {
        MethodManifest {
            name: self.name.into(),
            role: self.role(),
            version: self.version.into(),
            description: self.description.into(),
            schema: RString::from((self.schema)().to_string()),
        }
    }

    /// Creates the method from a validated config.
    pub fn create(
        &self,
        config: &serde_json::Value,
        ctx: &MethodContext,
        host: &Host,
    ) -> Result<MethodBox> {
        Ok(match self.constructor {
            Constructor::Weighting(f) => MethodBox::Weighting(f(config, ctx, host)?),
            Constructor::Strategy(f) => MethodBox::Strategy(f(config, ctx, host)?),
            Constructor::Architecture(f) => MethodBox::Architecture(f(config, ctx, host)?),
            Constructor::Fusion(f) => MethodBox::Fusion(f(config, ctx, host)?),
            Constructor::Grouping(f) => MethodBox::Grouping(f(config, ctx, host)?),
        })
    }
}

/// A created method object of any role.
pub enum MethodBox {
    /// A weighting.
    Weighting(Box<dyn Weighting>),
    /// A strategy.
    Strategy(Box<dyn Strategy>),
    /// An architecture.
    Architecture(Box<dyn Architecture>),
    /// A fusion.
    Fusion(Box<dyn Fusion>),
    /// A grouping.
    Grouping(Box<dyn Grouping>),
}

macro_rules! into_role {
    ($fn:ident, $variant:ident, $trait:ident) => {
        #[doc = concat!("The [`", stringify!($trait), "`], or an error naming the actual role.")]
        pub fn $fn(self) -> Result<Box<dyn $trait>> {
            match self {
                MethodBox::$variant(m) => Ok(m),
                other => Err(Error::msg(format!(
                    "expected a {} method, got a {} method",
                    Role::$variant,
                    other.role()
                ))),
            }
        }
    };
}

impl MethodBox {
    /// The object's role.
    pub fn role(&self) -> Role {
        match self {
            MethodBox::Weighting(_) => Role::Weighting,
            MethodBox::Strategy(_) => Role::Strategy,
            MethodBox::Architecture(_) => Role::Architecture,
            MethodBox::Fusion(_) => Role::Fusion,
            MethodBox::Grouping(_) => Role::Grouping,
        }
    }

    into_role!(into_weighting, Weighting, Weighting);
    into_role!(into_strategy, Strategy, Strategy);
    into_role!(into_architecture, Architecture, Architecture);
    into_role!(into_fusion, Fusion, Fusion);
    into_role!(into_grouping, Grouping, Grouping);
}
