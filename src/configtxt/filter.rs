//! Conditional filters (`[pi4]`, `[all]`, `[EDID=…]`, …): what kind each one is, how a new one
//! changes the set in force, and whether one holds for a given board.
//!
//! Semantics from raspberrypi/documentation `config_txt/conditional.adoc` ("Conditional
//! Filters"): `[all]` resets every filter; filters of different types combine (AND); a filter of
//! the same type as one already in force replaces it ("`[pi2]` overrides `[pi1]`"); `[none]`
//! blocks everything that follows until `[all]`.
//!
//! Must not: decide what a board is. The caller lists the model filters its board answers to.

/// The type of a filter. Two filters of the same type never hold together, so a new one
/// replaces the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `[pi3]`, `[pi3+]`, `[cm4]`, `[board-type=0x11]`: the documented "Model Filters" table
    /// lists `board-type` among them, so it shares their type.
    Model,
    /// `[none]`: nothing applies until `[all]`.
    Nothing,
    /// `[tryboot]`: holds only on a one-shot `tryboot` reboot.
    Tryboot,
    /// `[EDID=name]`: the monitor attached at boot.
    Edid,
    /// `[HDMI:0]`, `[HDMI:1]` (Pi 4): which HDMI port.
    Hdmi,
    /// `[gpio4=1]`: a GPIO level at boot.
    Gpio,
    /// `[0x12345678]`: the board's serial number.
    Serial,
    /// `[partition=N]`, `[boot_partition=N]`, and the expression filters over boot variables
    /// (`[boot_count<3]`, `[cust_otp0&0x1]`, …). Each variable is its own type: index into
    /// [`EXPR_VARIABLES`].
    Expr(usize),
}

/// What a section header does to the filters in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Section {
    /// `[all]`: drop every filter.
    All,
    /// A known filter of this kind.
    Filter(Kind),
    /// Not a filter pifw knows; the set in force is left alone.
    Unknown,
}

/// Model filters from the documented table, including the newer Compute Module and Pi 5
/// families. `[pi0]` covers Zero, Zero W and Zero 2 W; the Zero 2 W additionally matches
/// `[pi0w]` and `[pi02]` and does NOT match `[pi3]`, although it has a BCM2710A1 like a Pi 3.
const MODEL_FILTERS: &[&str] = &[
    "pi1", "pi2", "pi3", "pi3+", "pi4", "pi400", "cm4", "cm4s", "pi0", "pi0w", "pi02", "pi5",
    "pi500", "cm5", "cm0", "cm1", "cm3", "cm3+",
];

/// Boot variables the firmware's expression filters can test.
const EXPR_VARIABLES: &[&str] = &[
    "boot_arg1",
    "bootvar0",
    "boot_count",
    "boot_partition",
    "partition",
    "cust_otp",
];

/// Classifies the text between the brackets of a section header.
pub(crate) fn classify(name: &str) -> Section {
    match name {
        "all" => return Section::All,
        "none" => return Section::Filter(Kind::Nothing),
        "tryboot" => return Section::Filter(Kind::Tryboot),
        "HDMI:0" | "HDMI:1" => return Section::Filter(Kind::Hdmi),
        _ => {}
    }
    if MODEL_FILTERS.contains(&name) {
        return Section::Filter(Kind::Model);
    }
    if let Some(n) = name.strip_prefix("board-type=")
        && parse_int(n).is_some()
    {
        return Section::Filter(Kind::Model);
    }
    if let Some(edid) = name.strip_prefix("EDID=")
        && !edid.is_empty()
    {
        return Section::Filter(Kind::Edid);
    }
    if let Some(rest) = name.strip_prefix("gpio")
        && let Some((pin, level)) = rest.split_once('=')
        && !pin.is_empty()
        && pin.bytes().all(|b| b.is_ascii_digit())
        && (level == "0" || level == "1")
    {
        return Section::Filter(Kind::Gpio);
    }
    if let Some(hex) = name.strip_prefix("0x").or_else(|| name.strip_prefix("0X"))
        && !hex.is_empty()
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Section::Filter(Kind::Serial);
    }
    if let Some(var) = expr_variable(name) {
        return Section::Filter(Kind::Expr(var));
    }
    Section::Unknown
}

/// `[VAR=N]`, `[VAR&MASK]`, `[VAR&MASK=N]`, `[VAR<N]`, `[VAR>N]` over a known boot variable
/// (`cust_otp` takes an index: `cust_otp0`).
fn expr_variable(name: &str) -> Option<usize> {
    let op = name.find(['=', '&', '<', '>'])?;
    let (var, rest) = name.split_at(op);
    let index = EXPR_VARIABLES
        .iter()
        .position(|v| match v.strip_suffix("otp") {
            // `cust_otpN`: the variable takes a row index.
            Some(_) => var
                .strip_prefix(v)
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
            None => var == *v,
        })?;
    let (op, operand) = rest.split_at(1);
    let valid = match op {
        "=" | "<" | ">" => parse_int(operand).is_some(),
        "&" => match operand.split_once('=') {
            Some((mask, value)) => parse_int(mask).is_some() && parse_int(value).is_some(),
            None => parse_int(operand).is_some(),
        },
        _ => false,
    };
    valid.then_some(index)
}

/// Parses a decimal or `0x` hexadecimal number as written in a filter.
fn parse_int(s: &str) -> Option<u64> {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).ok()
    } else if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

/// The filters in force at one point of the file, in the order they were set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct State {
    active: Vec<(Kind, String)>,
}

impl State {
    /// Applies a section header. Returns false when the header is not a filter pifw knows
    /// (the state is then unchanged).
    pub(crate) fn apply(&mut self, name: &str) -> bool {
        match classify(name) {
            Section::All => {
                self.active.clear();
                true
            }
            Section::Filter(kind) => {
                self.active.retain(|(k, _)| *k != kind);
                self.active.push((kind, name.to_string()));
                true
            }
            Section::Unknown => false,
        }
    }

    /// The filters in force, as written between the brackets.
    pub(crate) fn names(&self) -> Vec<String> {
        self.active.iter().map(|(_, n)| n.clone()).collect()
    }
}

/// Whether one filter holds for a board.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Holds,
    Fails,
    /// Depends on something only the running board knows (monitor, GPIO, serial, …).
    Unknown,
}

/// Evaluates one filter (as written between brackets) for a board answering to
/// `board_filters`, on a normal (not `tryboot`) boot.
pub(crate) fn evaluate(name: &str, board_filters: &[&str]) -> Verdict {
    match classify(name) {
        Section::All => Verdict::Holds,
        Section::Filter(Kind::Nothing | Kind::Tryboot) => Verdict::Fails,
        Section::Filter(Kind::Model) => {
            if let Some(wanted) = name.strip_prefix("board-type=") {
                let wanted = parse_int(wanted);
                let given: Vec<Option<u64>> = board_filters
                    .iter()
                    .filter_map(|f| f.strip_prefix("board-type="))
                    .map(parse_int)
                    .collect();
                if given.is_empty() {
                    Verdict::Unknown
                } else if given.contains(&wanted) {
                    Verdict::Holds
                } else {
                    Verdict::Fails
                }
            } else if board_filters.contains(&name) {
                Verdict::Holds
            } else {
                Verdict::Fails
            }
        }
        Section::Filter(_) => Verdict::Unknown,
        // Never stored in a state, so never evaluated; be conservative if it is.
        Section::Unknown => Verdict::Unknown,
    }
}

/// Whether pifw can never evaluate this filter offline, whatever the caller tells about the board.
pub(crate) fn is_runtime_only(name: &str) -> bool {
    matches!(
        classify(name),
        Section::Filter(Kind::Edid | Kind::Hdmi | Kind::Gpio | Kind::Serial | Kind::Expr(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_documented_filters() {
        for name in ["pi3", "pi3+", "pi02", "cm4s", "pi500", "board-type=0x14"] {
            assert_eq!(classify(name), Section::Filter(Kind::Model), "{name}");
        }
        assert_eq!(classify("all"), Section::All);
        assert_eq!(classify("none"), Section::Filter(Kind::Nothing));
        assert_eq!(classify("tryboot"), Section::Filter(Kind::Tryboot));
        assert_eq!(
            classify("EDID=DEL-DELL_U2422H"),
            Section::Filter(Kind::Edid)
        );
        assert_eq!(classify("HDMI:1"), Section::Filter(Kind::Hdmi));
        assert_eq!(classify("gpio4=1"), Section::Filter(Kind::Gpio));
        assert_eq!(classify("0x12345678"), Section::Filter(Kind::Serial));
        assert_eq!(classify("partition=2"), Section::Filter(Kind::Expr(4)));
        assert_eq!(classify("boot_partition=3"), Section::Filter(Kind::Expr(3)));
        assert_eq!(classify("boot_count<3"), Section::Filter(Kind::Expr(2)));
        assert_eq!(
            classify("cust_otp0&0x1=0x1"),
            Section::Filter(Kind::Expr(5))
        );
    }

    #[test]
    fn rejects_near_misses() {
        for name in [
            "PI3",
            "pi6",
            "HDMI:2",
            "gpio4=2",
            "gpio=1",
            "0xZZ",
            "EDID=",
            "board-type=x",
            "partition=",
            "foo=1",
            "",
            "cust_otp&1",
            "boot_count<3=1",
        ] {
            assert_eq!(classify(name), Section::Unknown, "{name:?}");
        }
    }

    #[test]
    fn same_type_replaces_different_types_combine() {
        let mut s = State::default();
        assert!(s.apply("pi3"));
        assert!(s.apply("HDMI:1"));
        assert!(s.apply("pi4"));
        assert_eq!(s.names(), ["HDMI:1", "pi4"]);
        assert!(!s.apply("bogus"));
        assert_eq!(s.names(), ["HDMI:1", "pi4"]);
        assert!(s.apply("all"));
        assert!(s.names().is_empty());
    }

    #[test]
    fn evaluates_for_a_board() {
        let b3p = ["pi3", "pi3+"];
        assert_eq!(evaluate("pi3", &b3p), Verdict::Holds);
        assert_eq!(evaluate("pi3+", &b3p), Verdict::Holds);
        assert_eq!(evaluate("pi4", &b3p), Verdict::Fails);
        assert_eq!(evaluate("none", &b3p), Verdict::Fails);
        assert_eq!(evaluate("tryboot", &b3p), Verdict::Fails);
        assert_eq!(evaluate("HDMI:1", &b3p), Verdict::Unknown);
        assert_eq!(evaluate("board-type=0x11", &b3p), Verdict::Unknown);
        let cm4 = ["pi4", "cm4", "board-type=0x14"];
        assert_eq!(evaluate("board-type=20", &cm4), Verdict::Holds);
        assert_eq!(evaluate("board-type=0x11", &cm4), Verdict::Fails);
    }
}
