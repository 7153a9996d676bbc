//! A stand-in for the national population database: deterministic,
//! entirely synthetic citizens for any well-formed citizen ID.
//!
//! It exists so the gateway can be run, demonstrated and tested without
//! touching real personal data. Every response says it is synthetic, in the
//! body (`"synthetic": true`) and in a header (`X-Synthetic-Data: true`).
//!
//! Citizen IDs follow the 12-digit national ID layout: 3-digit province code,
//! 1 digit for century and gender, 2-digit birth year, 6 digits.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

/// Province codes of the national ID scheme and their names.
const PROVINCES: &[(u16, &str)] = &[
    (1, "Hà Nội"),
    (2, "Hà Giang"),
    (4, "Cao Bằng"),
    (6, "Bắc Kạn"),
    (8, "Tuyên Quang"),
    (10, "Lào Cai"),
    (11, "Điện Biên"),
    (12, "Lai Châu"),
    (14, "Sơn La"),
    (15, "Yên Bái"),
    (17, "Hòa Bình"),
    (19, "Thái Nguyên"),
    (20, "Lạng Sơn"),
    (22, "Quảng Ninh"),
    (24, "Bắc Giang"),
    (25, "Phú Thọ"),
    (26, "Vĩnh Phúc"),
    (27, "Bắc Ninh"),
    (30, "Hải Dương"),
    (31, "Hải Phòng"),
    (33, "Hưng Yên"),
    (34, "Thái Bình"),
    (35, "Hà Nam"),
    (36, "Nam Định"),
    (37, "Ninh Bình"),
    (38, "Thanh Hóa"),
    (40, "Nghệ An"),
    (42, "Hà Tĩnh"),
    (44, "Quảng Bình"),
    (45, "Quảng Trị"),
    (46, "Thừa Thiên Huế"),
    (48, "Đà Nẵng"),
    (49, "Quảng Nam"),
    (51, "Quảng Ngãi"),
    (52, "Bình Định"),
    (54, "Phú Yên"),
    (56, "Khánh Hòa"),
    (58, "Ninh Thuận"),
    (60, "Bình Thuận"),
    (62, "Kon Tum"),
    (64, "Gia Lai"),
    (66, "Đắk Lắk"),
    (67, "Đắk Nông"),
    (68, "Lâm Đồng"),
    (70, "Bình Phước"),
    (72, "Tây Ninh"),
    (74, "Bình Dương"),
    (75, "Đồng Nai"),
    (77, "Bà Rịa - Vũng Tàu"),
    (79, "Hồ Chí Minh"),
    (80, "Long An"),
    (82, "Tiền Giang"),
    (83, "Bến Tre"),
    (84, "Trà Vinh"),
    (86, "Vĩnh Long"),
    (87, "Đồng Tháp"),
    (89, "An Giang"),
    (91, "Kiên Giang"),
    (92, "Cần Thơ"),
    (93, "Hậu Giang"),
    (94, "Sóc Trăng"),
    (95, "Bạc Liêu"),
    (96, "Cà Mau"),
];

const FAMILY: &[&str] = &[
    "Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng", "Bùi", "Đỗ",
    "Hồ", "Ngô", "Dương", "Lý",
];
const MIDDLE_M: &[&str] = &["Văn", "Hữu", "Đức", "Minh", "Quang", "Thành"];
const MIDDLE_F: &[&str] = &["Thị", "Ngọc", "Thu", "Minh", "Thanh", "Bảo"];
const GIVEN_M: &[&str] = &[
    "An", "Bình", "Cường", "Dũng", "Hải", "Hùng", "Khoa", "Long", "Nam", "Phong", "Quân", "Sơn",
    "Tuấn", "Việt",
];
const GIVEN_F: &[&str] = &[
    "Anh", "Chi", "Hà", "Hạnh", "Hoa", "Hương", "Lan", "Linh", "Mai", "Ngân", "Nhung", "Phương",
    "Thảo", "Trang",
];
const STREETS: &[&str] = &[
    "Lê Lợi",
    "Trần Hưng Đạo",
    "Nguyễn Huệ",
    "Hai Bà Trưng",
    "Lý Thường Kiệt",
    "Quang Trung",
    "Hùng Vương",
    "Phan Đình Phùng",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Gender {
    Male,
    Female,
}

/// A parsed, well-formed citizen ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CitizenId {
    pub digits: String,
    pub province: &'static str,
    pub gender: Gender,
    pub birth_year: u16,
}

impl CitizenId {
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if s.len() != 12 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err("a citizen ID is exactly 12 digits");
        }
        let b = s.as_bytes();
        let num = |r: std::ops::Range<usize>| -> u16 {
            b[r].iter()
                .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'))
        };
        let code = num(0..3);
        let province = PROVINCES
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, n)| *n)
            .ok_or("the first 3 digits are not a province code")?;
        let cg = num(3..4);
        let century = 1900 + 100 * (cg / 2);
        let gender = if cg % 2 == 0 {
            Gender::Male
        } else {
            Gender::Female
        };
        let birth_year = century + num(4..6);
        Ok(CitizenId {
            digits: s.to_owned(),
            province,
            gender,
            birth_year,
        })
    }

    fn seed(&self) -> [u8; 32] {
        Sha256::digest(format!("popgate-synthetic:{}", self.digits)).into()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Citizen {
    pub citizen_id: String,
    pub full_name: String,
    pub date_of_birth: String,
    pub gender: Gender,
    pub province_of_origin: String,
    pub synthetic: bool,
}

pub fn citizen(id: &CitizenId) -> Citizen {
    let s = id.seed();
    let pick = |list: &[&'static str], i: usize| list[usize::from(s[i]) % list.len()];
    let (middle, given) = match id.gender {
        Gender::Male => (MIDDLE_M, GIVEN_M),
        Gender::Female => (MIDDLE_F, GIVEN_F),
    };
    let month = 1 + u32::from(s[3]) % 12;
    let day = 1 + u32::from(s[4]) % 28;
    Citizen {
        citizen_id: id.digits.clone(),
        full_name: format!("{} {} {}", pick(FAMILY, 0), pick(middle, 1), pick(given, 2)),
        date_of_birth: format!("{:04}-{month:02}-{day:02}", id.birth_year),
        gender: id.gender,
        province_of_origin: id.province.to_owned(),
        synthetic: true,
    }
}

#[derive(Debug, Serialize)]
struct Residence {
    citizen_id: String,
    permanent_address: String,
    province: String,
    registered_since: String,
    synthetic: bool,
}

fn residence(id: &CitizenId) -> Residence {
    let s = id.seed();
    let c = citizen(id);
    Residence {
        citizen_id: id.digits.clone(),
        permanent_address: format!(
            "Số {} đường {}, phường {}",
            1 + u16::from(s[5]) % 300,
            STREETS[usize::from(s[6]) % STREETS.len()],
            1 + s[7] % 20
        ),
        province: id.province.to_owned(),
        registered_since: format!("{}-01-01", id.birth_year + 18 + u16::from(s[8] % 10)),
        synthetic: c.synthetic,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyRequest {
    full_name: String,
    date_of_birth: String,
}

/// Compares names the way a clerk would: case- and whitespace-insensitive,
/// but not diacritic-insensitive (Lê and Le are different family names).
fn same_name(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        s.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    };
    norm(a) == norm(b)
}

fn json(status: StatusCode, body: &impl Serialize) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-synthetic-data", "true")
        .body(Full::new(Bytes::from(bytes)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    json(
        status,
        &serde_json::json!({"error": code, "message": message, "synthetic": true}),
    )
}

/// Handles one request; public so tests can call it without a socket.
pub async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let resp = match (req.method(), segs.as_slice()) {
        (&Method::GET, ["v1", "citizens", id]) => match CitizenId::parse(id) {
            Ok(id) => json(StatusCode::OK, &citizen(&id)),
            Err(why) => error(StatusCode::BAD_REQUEST, "bad_citizen_id", why),
        },
        (&Method::GET, ["v1", "citizens", id, "residence"]) => match CitizenId::parse(id) {
            Ok(id) => json(StatusCode::OK, &residence(&id)),
            Err(why) => error(StatusCode::BAD_REQUEST, "bad_citizen_id", why),
        },
        (&Method::POST, ["v1", "citizens", id, "verify"]) => {
            let id = match CitizenId::parse(id) {
                Ok(id) => id,
                Err(why) => return Ok(error(StatusCode::BAD_REQUEST, "bad_citizen_id", why)),
            };
            let body = match Limited::new(req.into_body(), 4096).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return Ok(error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "bad_body",
                        "body unreadable or larger than 4 KiB",
                    ))
                }
            };
            match serde_json::from_slice::<VerifyRequest>(&body) {
                Ok(v) => {
                    let c = citizen(&id);
                    let matched = same_name(&v.full_name, &c.full_name)
                        && v.date_of_birth.trim() == c.date_of_birth;
                    json(
                        StatusCode::OK,
                        &serde_json::json!({"match": matched, "synthetic": true}),
                    )
                }
                Err(e) => error(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    &format!("expected JSON {{\"full_name\", \"date_of_birth\"}}: {e}"),
                ),
            }
        }
        (&Method::GET, ["healthz"]) => json(StatusCode::OK, &serde_json::json!({"ok": true})),
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such resource"),
    };
    Ok(resp)
}

/// Serves the synthetic registry until the task is dropped.
pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let io = TokioIo::new(stream);
            if let Err(e) = http1::Builder::new()
                .serve_connection(io, service_fn(handle))
                .await
            {
                tracing::debug!(error = %e, "synthetic registry connection ended");
            }
        });
    }
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_id_layout() {
        let id = CitizenId::parse("001203012345").unwrap();
        assert_eq!(id.province, "Hà Nội");
        assert_eq!(id.gender, Gender::Male);
        assert_eq!(id.birth_year, 2003);
        let id = CitizenId::parse("064185000001").unwrap();
        assert_eq!(id.province, "Gia Lai");
        assert_eq!(id.gender, Gender::Female);
        assert_eq!(id.birth_year, 1985);
    }

    #[test]
    fn rejects_malformed_ids() {
        for bad in [
            "",
            "00120301234",
            "0012030123456",
            "00120301234a",
            "003203012345",
            "999203012345",
        ] {
            assert!(CitizenId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn citizens_are_deterministic_and_consistent_with_the_id() {
        let id = CitizenId::parse("035190123456").unwrap();
        let a = citizen(&id);
        let b = citizen(&id);
        assert_eq!(a.full_name, b.full_name);
        assert!(a.date_of_birth.starts_with("1990-"));
        assert_eq!(a.province_of_origin, "Hà Nam");
        assert!(a.synthetic);
        let other = citizen(&CitizenId::parse("035190123457").unwrap());
        assert!(a.full_name != other.full_name || a.date_of_birth != other.date_of_birth);
    }

    #[test]
    fn name_comparison_ignores_case_and_spacing_not_diacritics() {
        assert!(same_name("nguyễn  văn an", "Nguyễn Văn An"));
        assert!(!same_name("Nguyen Van An", "Nguyễn Văn An"));
    }
}
