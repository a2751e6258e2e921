//! A scripted browser for the test provider: no redirects followed, a plain cookie jar, the
//! fixture's login and consent forms; and the device authorization grant as `jit login` runs it.

use super::*;

pub(super) struct Browser {
    pub(super) http: reqwest::Client,
    pub(super) cookies: HashMap<String, String>,
}

pub(super) struct Page {
    pub(super) status: u16,
    pub(super) location: Option<Url>,
    pub(super) body: String,
}

pub(super) struct Walk {
    /// The URL the walk stopped at (the redirect URI, or a final page).
    pub(super) end: Url,
    /// A login form was shown (the provider asked for credentials).
    pub(super) login_form: bool,
    pub(super) body: String,
}

impl Browser {
    pub(super) fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            cookies: HashMap::new(),
        }
    }

    pub(super) async fn request(&mut self, url: &Url, form: Option<&[(&str, &str)]>) -> Page {
        let mut request = match form {
            Some(form) => self.http.post(url.clone()).form(form),
            None => self.http.get(url.clone()),
        };
        if !self.cookies.is_empty() {
            let cookie = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            request = request.header("cookie", cookie);
        }
        let response = request.send().await.unwrap();
        for value in response.headers().get_all("set-cookie") {
            let value = value.to_str().unwrap();
            let pair = value.split(';').next().unwrap();
            let (name, v) = pair.split_once('=').unwrap();
            let expired = value
                .to_ascii_lowercase()
                .contains("expires=thu, 01 jan 1970");
            if v.is_empty() || expired {
                self.cookies.remove(name.trim());
            } else {
                self.cookies.insert(name.trim().to_owned(), v.to_owned());
            }
        }
        let location = response
            .headers()
            .get("location")
            .map(|l| url.join(l.to_str().unwrap()).unwrap());
        Page {
            status: response.status().as_u16(),
            location,
            body: response.text().await.unwrap(),
        }
    }

    /// Follows redirects and answers the provider's login and consent forms as `login`, until
    /// `done(url)` or a page without a form.
    pub(super) async fn walk(
        &mut self,
        start: &Url,
        login: &str,
        done: impl Fn(&Url) -> bool,
    ) -> Walk {
        let mut next = start.clone();
        let mut login_form = false;
        for _ in 0..16 {
            if done(&next) {
                return Walk {
                    end: next,
                    login_form,
                    body: String::new(),
                };
            }
            let page = self.request(&next, None).await;
            if let Some(location) = page.location {
                next = location;
                continue;
            }
            assert_eq!(page.status, 200, "unexpected page at {next}: {}", page.body);
            let form: Vec<(&str, &str)> = if page.body.contains("name=\"login\"") {
                login_form = true;
                vec![("prompt", "login"), ("login", login), ("password", "x")]
            } else if next.path().starts_with("/interaction/") {
                vec![("prompt", "consent")]
            } else {
                return Walk {
                    end: next,
                    login_form,
                    body: page.body,
                };
            };
            let answer = self.request(&next, Some(&form)).await;
            next = answer
                .location
                .unwrap_or_else(|| panic!("form POST at {next} did not redirect: {}", answer.body));
        }
        panic!("sign-in did not finish")
    }

    /// Signs in through `auth_url`; the callback URL the provider redirected to.
    pub(super) async fn sign_in(&mut self, auth_url: &Url, redirect: &str, login: &str) -> Walk {
        let walk = self
            .walk(auth_url, login, |u| u.as_str().starts_with(redirect))
            .await;
        assert!(
            walk.end.as_str().starts_with(redirect),
            "ended at {}",
            walk.end
        );
        walk
    }
}

/// `code` and `state` of a callback URL.
pub(super) fn callback(url: &Url) -> (String, String) {
    let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(
        q.get("iss").map(String::as_str),
        Some(idp().as_str()),
        "{url}"
    );
    (q["code"].clone(), q["state"].clone())
}

/// The same login state with one field changed (fields are private; the state is JSON anyway).
pub(super) fn tweak(state: &LoginState, field: &str, value: Value) -> LoginState {
    let mut json = serde_json::to_value(state).unwrap();
    json[field] = value;
    serde_json::from_value(json).unwrap()
}

pub(super) fn field_of(body: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = body
        .find(&marker)
        .unwrap_or_else(|| panic!("no `{name}` in {body}"))
        + marker.len();
    body[start..].split('"').next().unwrap().to_owned()
}

/// The device authorization grant as `jit login` runs it, with the approval scripted at the
/// provider; the token response.
pub(super) async fn device_tokens(login: &str, scope: &str, resource: Option<&str>) -> Value {
    let mut extra = Vec::new();
    if let Some(resource) = resource {
        extra.push(("resource", resource));
    }
    device_tokens_with(login, scope, &extra).await
}

/// [`device_tokens`] with more parameters for the device authorization request (`claims`, …).
pub(crate) async fn device_tokens_with(login: &str, scope: &str, extra: &[(&str, &str)]) -> Value {
    let issuer = idp();
    let http = reqwest::Client::new();
    let mut form = vec![("client_id", "jit-cli"), ("scope", scope)];
    form.extend_from_slice(extra);
    let device: Value = http
        .post(format!("{issuer}/device/auth"))
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let device_code = device["device_code"].as_str().unwrap().to_owned();
    assert_eq!(
        poll_device(&http, &issuer, &device_code).await["error"],
        "authorization_pending"
    );

    let mut browser = Browser::new();
    let page = browser
        .request(
            &Url::parse(device["verification_uri_complete"].as_str().unwrap()).unwrap(),
            None,
        )
        .await;
    let xsrf = field_of(&page.body, "xsrf");
    let confirm = browser
        .request(
            &Url::parse(&format!("{issuer}/device")).unwrap(),
            Some(&[
                ("xsrf", xsrf.as_str()),
                ("user_code", device["user_code"].as_str().unwrap()),
                ("confirm", "yes"),
            ]),
        )
        .await;
    let walk = browser
        .walk(&confirm.location.unwrap(), login, |_| false)
        .await;
    assert!(walk.body.contains("Sign-in Success"), "{}", walk.body);

    for _ in 0..20 {
        let tokens = poll_device(&http, &issuer, &device_code).await;
        if tokens.get("access_token").is_some() {
            return tokens;
        }
        assert_eq!(tokens["error"], "authorization_pending", "{tokens}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("device flow did not finish")
}

pub(super) async fn poll_device(http: &reqwest::Client, issuer: &str, device_code: &str) -> Value {
    http.post(format!("{issuer}/token"))
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("client_id", "jit-cli"),
            ("device_code", device_code),
        ])
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()
}

pub(crate) fn access_token(tokens: &Value) -> String {
    tokens["access_token"].as_str().unwrap().to_owned()
}
