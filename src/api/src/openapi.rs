//! Hand-written schemas for the wire types whose derived schema would be too loose.

use std::borrow::Cow;

use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Schema};

use crate::duration::MAX_SECONDS;
use crate::{DurationInput, ErrorCode};

/// The canonical text forms [`crate::parse_duration`] accepts and [`crate::format_duration`]
/// writes: plain seconds, or `d`, `h`, `m`, `s` parts in that order, each non-zero and below the
/// next unit (days below 366, so the whole stays within a year).
pub const DURATION_PATTERN: &str = concat!(
    "^(?:[1-9][0-9]{0,6}",
    "|(?:36[0-5]|3[0-5][0-9]|[12][0-9]{2}|[1-9][0-9]?)d",
    "(?:(?:2[0-3]|1[0-9]|[1-9])h)?(?:(?:[1-5][0-9]|[1-9])m)?(?:(?:[1-5][0-9]|[1-9])s)?",
    "|(?:2[0-3]|1[0-9]|[1-9])h(?:(?:[1-5][0-9]|[1-9])m)?(?:(?:[1-5][0-9]|[1-9])s)?",
    "|(?:[1-5][0-9]|[1-9])m(?:(?:[1-5][0-9]|[1-9])s)?",
    "|(?:[1-5][0-9]|[1-9])s",
    ")$"
);

impl utoipa::PartialSchema for DurationInput {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                    .minimum(Some(1))
                    .maximum(Some(MAX_SECONDS))
                    .description(Some("Seconds, from 1 to a year (366 days).")),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(DURATION_PATTERN))
                    .description(Some(
                        "Human form: `45s`, `30m`, `1h30m`, `2d`, or seconds as digits. \
                         The broker also reads spaces between the parts (`1h 30m`) and \
                         un-normalised parts (`90m`) up to a year.",
                    )),
            )
            .description(Some(
                "A duration: a string like `1h30m` or seconds as a number.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for DurationInput {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("DurationInput")
    }
}

impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(Self::ALL.iter().map(|c| c.as_str())))
            .description(Some(
                "Machine-readable code; each goes with one HTTP status (clients treat a code \
                 they do not know by its status).",
            ))
            .into()
    }
}

impl utoipa::ToSchema for ErrorCode {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ErrorCode")
    }
}
