//! Recursive-descent parser producing an untyped syntax tree, with Postgres' operator
//! precedence (PG ≥ 9.5): OR < AND < NOT < IS < comparison < BETWEEN/IN/LIKE < other operators
//! (`||`, `@>`, `<@`, `&&`) < unary minus < `::`.

use crate::error::WhereError;
use crate::lexer::{Tok, Token};

/// Deepest expression tree accepted. Bounds recursion in every later pass (type check,
/// evaluation, rendering, drop), so hostile input cannot overflow the stack.
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    pub(crate) fn is_equality(self) -> bool {
        matches!(self, CmpOp::Eq | CmpOp::Ne)
    }

    pub(crate) fn sql(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "<>",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArrayOp {
    Contains,
    ContainedBy,
    Overlaps,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IsTest {
    Null,
    True,
    False,
    Unknown,
}

#[derive(Debug, Clone)]
pub(crate) struct TypeName {
    pub name: String,
    pub array: bool,
}

/// Syntax tree; `pos` fields are byte offsets into the clause, for error messages.
#[derive(Debug, Clone)]
pub(crate) enum Ast {
    Column {
        name: String,
        pos: usize,
    },
    Param {
        n: u32,
        pos: usize,
    },
    Str {
        text: String,
        pos: usize,
    },
    Number {
        text: String,
        pos: usize,
    },
    Bool {
        value: bool,
        pos: usize,
    },
    Null {
        pos: usize,
    },
    Cast {
        expr: Box<Ast>,
        ty: TypeName,
        pos: usize,
    },
    Neg {
        expr: Box<Ast>,
        pos: usize,
    },
    Not {
        expr: Box<Ast>,
        pos: usize,
    },
    And(Vec<Ast>),
    Or(Vec<Ast>),
    Cmp {
        op: CmpOp,
        l: Box<Ast>,
        r: Box<Ast>,
        pos: usize,
    },
    Quantified {
        op: CmpOp,
        all: bool,
        l: Box<Ast>,
        r: Box<Ast>,
        pos: usize,
    },
    Concat {
        l: Box<Ast>,
        r: Box<Ast>,
        pos: usize,
    },
    ArrayOp {
        op: ArrayOp,
        l: Box<Ast>,
        r: Box<Ast>,
        pos: usize,
    },
    Is {
        expr: Box<Ast>,
        test: IsTest,
        negated: bool,
        pos: usize,
    },
    /// `l IS [NOT] DISTINCT FROM r`.
    Distinct {
        l: Box<Ast>,
        r: Box<Ast>,
        negated: bool,
        pos: usize,
    },
    Between {
        expr: Box<Ast>,
        lo: Box<Ast>,
        hi: Box<Ast>,
        negated: bool,
        pos: usize,
    },
    In {
        expr: Box<Ast>,
        list: Vec<Ast>,
        negated: bool,
        pos: usize,
    },
    Like {
        expr: Box<Ast>,
        pattern: Box<Ast>,
        escape: Option<Box<Ast>>,
        ci: bool,
        negated: bool,
        pos: usize,
    },
    Func {
        name: String,
        args: Vec<Ast>,
        pos: usize,
    },
    Array {
        items: Vec<Ast>,
        pos: usize,
    },
    /// `(a, b)`: only meaningful as the left side of `IN (SELECT …)`.
    Row {
        items: Vec<Ast>,
        pos: usize,
    },
    /// `left [NOT] IN (SELECT cols FROM table [WHERE filter])`.
    InSelect {
        left: Box<Ast>,
        select: Box<Select>,
        negated: bool,
        pos: usize,
    },
}

/// The one form of subquery accepted: plain columns of one table, an optional WHERE, no
/// other clause (Electric's rule: what it can follow from the table's change stream).
#[derive(Debug, Clone)]
pub(crate) struct Select {
    /// Column names and their byte offsets.
    pub columns: Vec<(String, usize)>,
    /// Unqualified: the table lives in the shape's own schema.
    pub table: String,
    pub table_pos: usize,
    pub filter: Option<Ast>,
}

impl Ast {
    /// Calls `f` with the table of every subquery, outermost first (nested ones included, so
    /// their tables are known when they are refused with a precise error).
    pub(crate) fn visit_selects(&self, f: &mut dyn FnMut(&str)) {
        match self {
            Ast::InSelect { left, select, .. } => {
                left.visit_selects(f);
                f(&select.table);
                if let Some(w) = &select.filter {
                    w.visit_selects(f);
                }
            }
            Ast::Column { .. }
            | Ast::Param { .. }
            | Ast::Str { .. }
            | Ast::Number { .. }
            | Ast::Bool { .. }
            | Ast::Null { .. } => {}
            Ast::Cast { expr, .. } | Ast::Neg { expr, .. } | Ast::Not { expr, .. } | Ast::Is { expr, .. } => {
                expr.visit_selects(f)
            }
            Ast::And(v)
            | Ast::Or(v)
            | Ast::Func { args: v, .. }
            | Ast::Array { items: v, .. }
            | Ast::Row { items: v, .. } => v.iter().for_each(|a| a.visit_selects(f)),
            Ast::Cmp { l, r, .. }
            | Ast::Quantified { l, r, .. }
            | Ast::Concat { l, r, .. }
            | Ast::ArrayOp { l, r, .. }
            | Ast::Distinct { l, r, .. } => {
                l.visit_selects(f);
                r.visit_selects(f);
            }
            Ast::Between { expr, lo, hi, .. } => {
                expr.visit_selects(f);
                lo.visit_selects(f);
                hi.visit_selects(f);
            }
            Ast::In { expr, list, .. } => {
                expr.visit_selects(f);
                list.iter().for_each(|a| a.visit_selects(f));
            }
            Ast::Like { expr, pattern, escape, .. } => {
                expr.visit_selects(f);
                pattern.visit_selects(f);
                if let Some(e) = escape {
                    e.visit_selects(f);
                }
            }
        }
    }

    fn contains_between(&self) -> bool {
        match self {
            Ast::Between { .. } => true,
            Ast::Column { .. }
            | Ast::Param { .. }
            | Ast::Str { .. }
            | Ast::Number { .. }
            | Ast::Bool { .. }
            | Ast::Null { .. } => false,
            Ast::Cast { expr, .. } | Ast::Neg { expr, .. } | Ast::Not { expr, .. } | Ast::Is { expr, .. } => {
                expr.contains_between()
            }
            Ast::And(v)
            | Ast::Or(v)
            | Ast::Func { args: v, .. }
            | Ast::Array { items: v, .. }
            | Ast::Row { items: v, .. } => v.iter().any(Ast::contains_between),
            Ast::InSelect { left, .. } => left.contains_between(),
            Ast::Cmp { l, r, .. }
            | Ast::Quantified { l, r, .. }
            | Ast::Concat { l, r, .. }
            | Ast::ArrayOp { l, r, .. }
            | Ast::Distinct { l, r, .. } => l.contains_between() || r.contains_between(),
            Ast::In { expr, list, .. } => expr.contains_between() || list.iter().any(Ast::contains_between),
            Ast::Like { expr, pattern, escape, .. } => {
                expr.contains_between()
                    || pattern.contains_between()
                    || escape.as_ref().is_some_and(|e| e.contains_between())
            }
        }
    }

    pub(crate) fn pos(&self) -> usize {
        match self {
            Ast::Column { pos, .. }
            | Ast::Param { pos, .. }
            | Ast::Str { pos, .. }
            | Ast::Number { pos, .. }
            | Ast::Bool { pos, .. }
            | Ast::Null { pos }
            | Ast::Cast { pos, .. }
            | Ast::Neg { pos, .. }
            | Ast::Not { pos, .. }
            | Ast::Cmp { pos, .. }
            | Ast::Quantified { pos, .. }
            | Ast::Concat { pos, .. }
            | Ast::ArrayOp { pos, .. }
            | Ast::Is { pos, .. }
            | Ast::Distinct { pos, .. }
            | Ast::Between { pos, .. }
            | Ast::In { pos, .. }
            | Ast::Like { pos, .. }
            | Ast::Func { pos, .. }
            | Ast::Array { pos, .. }
            | Ast::Row { pos, .. }
            | Ast::InSelect { pos, .. } => *pos,
            Ast::And(v) | Ast::Or(v) => v.first().map_or(0, Ast::pos),
        }
    }
}

/// Words that cannot be column names unless quoted (Postgres' reserved keywords we meet).
const RESERVED: &[&str] = &[
    "and",
    "or",
    "not",
    "is",
    "null",
    "true",
    "false",
    "in",
    "like",
    "ilike",
    "between",
    "any",
    "all",
    "some",
    "cast",
    "as",
    "array",
    "escape",
    "symmetric",
    "isnull",
    "notnull",
    "similar",
    "select",
    "from",
    "where",
    "case",
    "when",
    "then",
    "else",
    "end",
    "exists",
    "unknown",
    "collate",
];

pub(crate) struct Parser<'a> {
    src: &'a str,
    toks: Vec<Token>,
    i: usize,
    depth: usize,
}

type PResult = Result<Ast, WhereError>;

impl<'a> Parser<'a> {
    pub(crate) fn new(src: &'a str, toks: Vec<Token>) -> Self {
        Self { src, toks, i: 0, depth: 0 }
    }

    pub(crate) fn parse(mut self) -> PResult {
        let e = self.expr()?;
        if self.peek() != &Tok::Eof {
            return Err(self.unexpected());
        }
        Ok(e)
    }

    fn peek(&self) -> &Tok {
        &self.toks[self.i.min(self.toks.len() - 1)].tok
    }

    fn peek_at(&self, k: usize) -> &Tok {
        &self.toks[(self.i + k).min(self.toks.len() - 1)].tok
    }

    fn pos(&self) -> usize {
        self.toks[self.i.min(self.toks.len() - 1)].start
    }

    /// Always advances (past Eof too), so `self.i -= 1` undoes exactly one bump.
    fn bump(&mut self) -> Token {
        let t = self.toks[self.i.min(self.toks.len() - 1)].clone();
        self.i += 1;
        t
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Tok::Word(x) if x == w)
    }

    fn eat_word(&mut self, w: &str) -> bool {
        if self.is_word(w) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn eat(&mut self, t: &Tok) -> bool {
        if self.peek() == t {
            self.bump();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, t: &Tok) -> Result<(), WhereError> {
        if self.eat(t) { Ok(()) } else { Err(self.unexpected()) }
    }

    fn expect_word(&mut self, w: &str) -> Result<(), WhereError> {
        if self.eat_word(w) { Ok(()) } else { Err(self.unexpected()) }
    }

    /// Postgres' wording, which Electric passes through.
    fn unexpected(&self) -> WhereError {
        let t = &self.toks[self.i.min(self.toks.len() - 1)];
        if t.tok == Tok::Eof {
            WhereError::syntax(self.src, t.start, "syntax error at end of input")
        } else {
            WhereError::syntax(self.src, t.start, format!("syntax error at or near \"{}\"", &self.src[t.start..t.end]))
        }
    }

    /// Counts one level of tree depth for the duration of `f`.
    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, WhereError>) -> Result<T, WhereError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(WhereError::at(
                self.src,
                self.pos(),
                format!("expression is nested too deeply (limit {MAX_DEPTH})"),
            ));
        }
        let r = f(self);
        self.depth -= 1;
        r
    }

    fn expr(&mut self) -> PResult {
        self.nested(Self::or)
    }

    fn or(&mut self) -> PResult {
        let first = self.and()?;
        if !self.is_word("or") {
            return Ok(first);
        }
        let mut items = vec![first];
        while self.eat_word("or") {
            items.push(self.and()?);
        }
        Ok(Ast::Or(items))
    }

    fn and(&mut self) -> PResult {
        let first = self.not()?;
        if !self.is_word("and") {
            return Ok(first);
        }
        let mut items = vec![first];
        while self.eat_word("and") {
            items.push(self.not()?);
        }
        Ok(Ast::And(items))
    }

    fn not(&mut self) -> PResult {
        if self.is_word("not") {
            let pos = self.bump().start;
            let expr = self.nested(Self::not)?;
            return Ok(Ast::Not { expr: Box::new(expr), pos });
        }
        self.is_test()
    }

    fn is_test(&mut self) -> PResult {
        let mut e = self.comparison()?;
        // Each postfix test adds a level; `chain` keeps left-deep chains within MAX_DEPTH.
        let mut chain = 0;
        loop {
            let pos = self.pos();
            let (test, negated) = if self.eat_word("isnull") {
                (IsTest::Null, false)
            } else if self.eat_word("notnull") {
                (IsTest::Null, true)
            } else if self.eat_word("is") {
                let negated = self.eat_word("not");
                let test = match self.peek() {
                    Tok::Word(w) if w == "null" => IsTest::Null,
                    Tok::Word(w) if w == "true" => IsTest::True,
                    Tok::Word(w) if w == "false" => IsTest::False,
                    Tok::Word(w) if w == "unknown" => IsTest::Unknown,
                    Tok::Word(w) if w == "distinct" => {
                        self.bump();
                        self.expect_word("from")?;
                        chain += 1;
                        self.check_chain(chain)?;
                        // The right side binds tighter than IS: `a IS DISTINCT FROM b = c`
                        // compares a with (b = c), as in Postgres.
                        let r = self.nested(Self::comparison)?;
                        e = Ast::Distinct { l: Box::new(e), r: Box::new(r), negated, pos };
                        continue;
                    }
                    _ => return Err(self.unexpected()),
                };
                self.bump();
                (test, negated)
            } else {
                break;
            };
            chain += 1;
            self.check_chain(chain)?;
            e = Ast::Is { expr: Box::new(e), test, negated, pos };
        }
        Ok(e)
    }

    fn check_chain(&self, chain: usize) -> Result<(), WhereError> {
        if self.depth + chain > MAX_DEPTH {
            return Err(WhereError::at(
                self.src,
                self.pos(),
                format!("expression is nested too deeply (limit {MAX_DEPTH})"),
            ));
        }
        Ok(())
    }

    fn cmp_op(&self) -> Option<CmpOp> {
        match self.peek() {
            Tok::Op(o) => match o.as_str() {
                "=" => Some(CmpOp::Eq),
                "<>" | "!=" => Some(CmpOp::Ne),
                "<" => Some(CmpOp::Lt),
                "<=" => Some(CmpOp::Le),
                ">" => Some(CmpOp::Gt),
                ">=" => Some(CmpOp::Ge),
                _ => None,
            },
            _ => None,
        }
    }

    fn comparison(&mut self) -> PResult {
        let l = self.predicate()?;
        let Some(op) = self.cmp_op() else { return Ok(l) };
        let pos = self.bump().start;
        let quantifier = match self.peek() {
            Tok::Word(w) if (w == "any" || w == "some" || w == "all") && self.peek_at(1) == &Tok::LParen => {
                Some(w == "all")
            }
            _ => None,
        };
        let e = if let Some(all) = quantifier {
            self.bump();
            self.expect(&Tok::LParen)?;
            if self.is_word("select") {
                return Err(WhereError::at(self.src, self.pos(), "subqueries are not supported"));
            }
            let r = self.expr()?;
            self.expect(&Tok::RParen)?;
            Ast::Quantified { op, all, l: Box::new(l), r: Box::new(r), pos }
        } else {
            let r = self.predicate()?;
            Ast::Cmp { op, l: Box::new(l), r: Box::new(r), pos }
        };
        // Comparison operators do not associate in Postgres: `a = b = c` is a syntax error.
        if self.cmp_op().is_some() {
            return Err(self.unexpected());
        }
        Ok(e)
    }

    fn predicate(&mut self) -> PResult {
        let e = self.other()?;
        let pos = self.pos();
        let negated = match (self.peek(), self.peek_at(1)) {
            (Tok::Word(n), Tok::Word(w))
                if n == "not" && matches!(w.as_str(), "between" | "in" | "like" | "ilike" | "similar") =>
            {
                self.bump();
                true
            }
            _ => false,
        };
        if self.eat_word("between") {
            if self.is_word("symmetric") {
                return Err(WhereError::at(self.src, self.pos(), "BETWEEN SYMMETRIC is not supported"));
            }
            self.eat_word("asymmetric");
            // The tested expression is type-checked once per bound (BETWEEN means two
            // comparisons), so nesting BETWEEN inside it would grow the work exponentially.
            if e.contains_between() {
                return Err(WhereError::at(
                    self.src,
                    pos,
                    "BETWEEN nested inside the tested expression of BETWEEN is not supported",
                ));
            }
            let lo = self.nested(Self::other)?;
            self.expect_word("and")?;
            let hi = self.nested(Self::other)?;
            return Ok(Ast::Between { expr: Box::new(e), lo: Box::new(lo), hi: Box::new(hi), negated, pos });
        }
        if self.eat_word("in") {
            self.expect(&Tok::LParen)?;
            if self.eat_word("select") {
                let select = self.nested(Self::select)?;
                self.expect(&Tok::RParen)?;
                return Ok(Ast::InSelect { left: Box::new(e), select: Box::new(select), negated, pos });
            }
            if matches!(e, Ast::Row { .. }) {
                return Err(WhereError::at(
                    self.src,
                    pos,
                    "a row of columns can only be compared with IN (SELECT ...)",
                ));
            }
            let mut list = vec![self.expr()?];
            while self.eat(&Tok::Comma) {
                list.push(self.expr()?);
            }
            self.expect(&Tok::RParen)?;
            return Ok(Ast::In { expr: Box::new(e), list, negated, pos });
        }
        let ci = self.is_word("ilike");
        if self.eat_word("like") || self.eat_word("ilike") {
            let pattern = self.nested(Self::other)?;
            let escape = if self.eat_word("escape") { Some(Box::new(self.nested(Self::other)?)) } else { None };
            return Ok(Ast::Like { expr: Box::new(e), pattern: Box::new(pattern), escape, ci, negated, pos });
        }
        if self.is_word("similar") {
            return Err(WhereError::at(self.src, pos, "SIMILAR TO is not supported"));
        }
        if negated {
            return Err(self.unexpected());
        }
        Ok(e)
    }

    /// Postgres' "any other operator" level, left-associative.
    fn other(&mut self) -> PResult {
        let mut l = self.additive()?;
        let mut chain = 0;
        while let Tok::Op(o) = self.peek() {
            let kind = match o.as_str() {
                "||" => None,
                "@>" => Some(ArrayOp::Contains),
                "<@" => Some(ArrayOp::ContainedBy),
                "&&" => Some(ArrayOp::Overlaps),
                _ => break,
            };
            let pos = self.bump().start;
            chain += 1;
            self.check_chain(chain)?;
            let r = self.additive()?;
            l = match kind {
                None => Ast::Concat { l: Box::new(l), r: Box::new(r), pos },
                Some(op) => Ast::ArrayOp { op, l: Box::new(l), r: Box::new(r), pos },
            };
        }
        Ok(l)
    }

    fn additive(&mut self) -> PResult {
        let e = self.unary()?;
        if let Tok::Op(o) = self.peek()
            && self.cmp_op().is_none()
            && !matches!(o.as_str(), "||" | "@>" | "<@" | "&&")
        {
            return Err(WhereError::at(self.src, self.pos(), format!("operator {o} is not supported")));
        }
        Ok(e)
    }

    fn unary(&mut self) -> PResult {
        if let Tok::Op(o) = self.peek()
            && (o == "-" || o == "+")
        {
            let neg = o == "-";
            let pos = self.bump().start;
            let e = self.nested(Self::unary)?;
            return Ok(if neg { Ast::Neg { expr: Box::new(e), pos } } else { e });
        }
        self.postfix()
    }

    fn postfix(&mut self) -> PResult {
        let mut e = self.primary()?;
        let mut chain = 0;
        while self.peek() == &Tok::DoubleColon {
            let pos = self.bump().start;
            chain += 1;
            self.check_chain(chain)?;
            let ty = self.type_name()?;
            e = Ast::Cast { expr: Box::new(e), ty, pos };
        }
        if self.peek() == &Tok::LBracket {
            return Err(WhereError::at(self.src, self.pos(), "array subscripts are not supported"));
        }
        if self.is_word("collate") || self.is_word("at") {
            return Err(WhereError::at(
                self.src,
                self.pos(),
                format!("{} is not supported", self.src[self.toks[self.i].start..self.toks[self.i].end].to_uppercase()),
            ));
        }
        Ok(e)
    }

    fn type_name(&mut self) -> Result<TypeName, WhereError> {
        let mut name = match self.bump().tok {
            Tok::Word(w) => w,
            Tok::Quoted(q) => q,
            _ => {
                self.i -= 1;
                return Err(self.unexpected());
            }
        };
        // Multi-word SQL type names.
        if name == "double" && self.eat_word("precision") {
            name = "double precision".into();
        } else if name == "character" && self.eat_word("varying") {
            name = "character varying".into();
        } else if (name == "timestamp" || name == "time") && (self.is_word("with") || self.is_word("without")) {
            let with = self.eat_word("with");
            if !with {
                self.bump();
            }
            self.expect_word("time")?;
            self.expect_word("zone")?;
            name = format!("{name} {} time zone", if with { "with" } else { "without" });
        }
        if self.peek() == &Tok::LParen {
            return Err(WhereError::at(
                self.src,
                self.pos(),
                format!("type modifiers are not supported (casting to {name}(…))"),
            ));
        }
        let mut array = false;
        if self.eat(&Tok::LBracket) {
            self.expect(&Tok::RBracket)?;
            array = true;
            if self.peek() == &Tok::LBracket {
                return Err(WhereError::at(self.src, self.pos(), "multidimensional array types are not supported"));
            }
        }
        Ok(TypeName { name, array })
    }

    fn primary(&mut self) -> PResult {
        let t = self.bump();
        let pos = t.start;
        match t.tok {
            Tok::Number(text) => Ok(Ast::Number { text, pos }),
            Tok::Str(text) => Ok(Ast::Str { text, pos }),
            Tok::Param(n) => Ok(Ast::Param { n, pos }),
            Tok::Quoted(name) => self.column_or_call(name, pos, true),
            Tok::LParen => {
                if self.is_word("select") {
                    return Err(WhereError::at(
                        self.src,
                        self.pos(),
                        "only `value IN (SELECT ...)` sublinks are supported right now",
                    ));
                }
                let e = self.expr()?;
                if self.peek() == &Tok::Comma {
                    let mut items = vec![e];
                    while self.eat(&Tok::Comma) {
                        items.push(self.expr()?);
                    }
                    self.expect(&Tok::RParen)?;
                    return Ok(Ast::Row { items, pos });
                }
                self.expect(&Tok::RParen)?;
                Ok(e)
            }
            Tok::Word(w) => match w.as_str() {
                "true" => Ok(Ast::Bool { value: true, pos }),
                "false" => Ok(Ast::Bool { value: false, pos }),
                "null" => Ok(Ast::Null { pos }),
                "cast" => {
                    self.expect(&Tok::LParen)?;
                    let e = self.expr()?;
                    self.expect_word("as")?;
                    let ty = self.type_name()?;
                    self.expect(&Tok::RParen)?;
                    Ok(Ast::Cast { expr: Box::new(e), ty, pos })
                }
                "array" => {
                    self.expect(&Tok::LBracket)?;
                    let mut items = Vec::new();
                    if !self.eat(&Tok::RBracket) {
                        loop {
                            items.push(self.expr()?);
                            if self.eat(&Tok::RBracket) {
                                break;
                            }
                            self.expect(&Tok::Comma)?;
                        }
                    }
                    Ok(Ast::Array { items, pos })
                }
                "exists" | "select" => {
                    Err(WhereError::at(self.src, pos, "only `value IN (SELECT ...)` sublinks are supported right now"))
                }
                "case" => Err(WhereError::at(self.src, pos, "CASE expressions are not supported")),
                // `date '2024-01-01'`: a typed literal is a cast of a string.
                "date" | "timestamp" | "timestamptz" | "int" | "integer" | "bigint" | "smallint" | "numeric"
                | "boolean" | "uuid" | "text" | "real" | "float4" | "float8" | "int2" | "int4" | "int8" | "bool"
                | "varchar" | "decimal" | "jsonb"
                    if matches!(self.peek(), Tok::Str(_))
                        || (w == "timestamp" && (self.is_word("with") || self.is_word("without"))) =>
                {
                    self.i -= 1;
                    let ty = self.type_name()?;
                    let Tok::Str(text) = self.bump().tok else {
                        self.i -= 1;
                        return Err(self.unexpected());
                    };
                    let lit_pos = self.toks[self.i - 1].start;
                    Ok(Ast::Cast { expr: Box::new(Ast::Str { text, pos: lit_pos }), ty, pos })
                }
                _ if RESERVED.contains(&w.as_str()) => {
                    self.i -= 1;
                    Err(self.unexpected())
                }
                _ => self.column_or_call(w, pos, false),
            },
            _ => {
                self.i -= 1;
                Err(self.unexpected())
            }
        }
    }

    /// After `SELECT`: `col [, col …] FROM [schema.]table [WHERE filter]`, up to (not
    /// including) the closing parenthesis.
    fn select(&mut self) -> Result<Select, WhereError> {
        if self.is_word("distinct") || self.is_word("all") {
            return Err(WhereError::at(self.src, self.pos(), "SELECT statement must not contain any clauses"));
        }
        let mut columns = Vec::new();
        loop {
            let t = self.bump();
            match t.tok {
                Tok::Word(w) if !RESERVED.contains(&w.as_str()) => columns.push((w, t.start)),
                Tok::Quoted(w) => columns.push((w, t.start)),
                _ => return Err(WhereError::at(self.src, t.start, "Expected a plain column reference")),
            }
            if self.peek() != &Tok::Comma {
                break;
            }
            self.bump();
        }
        self.expect_word("from")?;
        let table_pos = self.pos();
        let table =
            self.ident().ok_or_else(|| WhereError::at(self.src, table_pos, "Expected a single table reference"))?;
        let filter = if self.eat_word("where") { Some(self.expr()?) } else { None };
        if self.peek() != &Tok::RParen {
            return Err(WhereError::at(self.src, self.pos(), "SELECT statement must not contain any clauses"));
        }
        Ok(Select { columns, table, table_pos, filter })
    }

    /// A plain or quoted identifier.
    fn ident(&mut self) -> Option<String> {
        match self.peek().clone() {
            Tok::Word(w) if !RESERVED.contains(&w.as_str()) => {
                self.bump();
                Some(w)
            }
            Tok::Quoted(w) => {
                self.bump();
                Some(w)
            }
            _ => None,
        }
    }

    fn column_or_call(&mut self, name: String, pos: usize, quoted: bool) -> PResult {
        if self.peek() == &Tok::LParen {
            self.bump();
            let mut args = Vec::new();
            if !self.eat(&Tok::RParen) {
                loop {
                    args.push(self.expr()?);
                    if self.eat(&Tok::RParen) {
                        break;
                    }
                    self.expect(&Tok::Comma)?;
                }
            }
            let name = if quoted { name } else { name.to_ascii_lowercase() };
            return Ok(Ast::Func { name, args, pos });
        }
        Ok(Ast::Column { name, pos })
    }
}
