/*
 * Keng soil sensor (cảm biến độ ẩm đất) for ESP32: device protocol v1 example.
 *
 * What it shows (see ../../device-protocol.md and ../../guide-esp32.md):
 *   - Wi-Fi station with automatic reconnect
 *   - MQTT 3.1.1 login with device id + secret, client id = device id,
 *     keep-alive 60 s, clean session
 *   - Last Will v1/devices/D/status {"online":false} (QoS 1, retained) and a
 *     retained {"online":true,...} status after each connect
 *   - subscription to v1/devices/D/rpc/request/+ (QoS 1); every request is
 *     answered, unknown methods with {"status":"rejected"}
 *   - a reading every 60 s, time-stamped in epoch milliseconds from NTP
 *     (TZ "ICT-7" = Asia/Ho_Chi_Minh for local logs only; ts is always UTC)
 *   - store-and-forward: a RAM ring buffer, copied to flash (NVS) while the
 *     backlog grows, uploaded oldest first as JSON arrays after reconnecting
 *   - exponential reconnect back-off with jitter; long back-off after
 *     CONNACK 4 (bad credentials) and 5 (device disabled)
 *
 * IMPORTANT: PubSubClient publishes at QoS 0 only. The protocol's delivery
 * guarantee (PUBACK = readings on disk) needs QoS 1; with this library a
 * batch leaves the ring buffer once it has been written to the TCP socket,
 * and a batch lost in a dying connection is lost. For QoS 1 use arduino-mqtt
 * (256dpi) or ESP-IDF esp_mqtt_client: see publishReliable() below and
 * guide-esp32.md. Everything else in this sketch stays the same.
 *
 * Libraries (Arduino Library Manager):
 *   - PubSubClient by Nick O'Leary, 2.8 or later
 *   - ArduinoJson by Benoit Blanchon, 7.x
 * Board: "ESP32 Dev Module" (arduino-esp32 core 2.x or 3.x).
 *
 * Wiring (ADC1 pins only: ADC2 cannot be used while Wi-Fi is on):
 *   GPIO34  capacitive soil moisture probe output (v1.2 type, 3.3 V supply)
 *   GPIO35  10 kΩ NTC (B 3950) to GND, 10 kΩ series resistor to 3.3 V
 *   GPIO33  battery voltage through a 1:1 divider (100 kΩ + 100 kΩ)
 *
 * Licence: Apache-2.0, like Keng.
 */

#define ARDUINOJSON_USE_LONG_LONG 1  // epoch milliseconds need 64-bit integers
#include <Arduino.h>
#include <WiFi.h>
#include <PubSubClient.h>
#include <ArduinoJson.h>
#include <Preferences.h>
#include <esp_timer.h>
#include <esp_system.h>
#include <sys/time.h>
#include <time.h>
#include <math.h>

// ---------------------------------------------------------------------------
// Configuration: change for each device. The secret is shown once by Keng at
// registration (POST /api/v1/devices → "secret").
// ---------------------------------------------------------------------------
static const char *WIFI_SSID = "thon3-wifi";
static const char *WIFI_PASS = "change-me";
static const char *MQTT_HOST = "192.168.1.10";   // the commune Keng controller
static const uint16_t MQTT_PORT = 1883;
static const char *DEVICE_ID = "soil-thon3-01";   // ^[a-z0-9][a-z0-9_-]{1,63}$
static const char *DEVICE_SECRET = "paste-the-device-secret-here";

static const char *FIRMWARE_VERSION = "1.0.0";
static const char *MODEL = "KENG-SOIL-ESP32";

static const uint32_t SAMPLE_INTERVAL_MS = 60UL * 1000UL;  // one reading a minute
static const uint16_t KEEPALIVE_S = 60;                    // protocol advice: 60 s

static const char *NTP_SERVER_1 = "vn.pool.ntp.org";
static const char *NTP_SERVER_2 = "pool.ntp.org";
static const char *NTP_SERVER_3 = "time.google.com";
static const char *TZ_INFO = "ICT-7";  // POSIX TZ for Asia/Ho_Chi_Minh (UTC+7, no DST)

// Sensor calibration: read the probe in dry air and in a glass of water.
static const float SOIL_DRY_MV = 2600.0f;
static const float SOIL_WET_MV = 1200.0f;
static const int PIN_SOIL = 34;
static const int PIN_NTC = 35;
static const int PIN_BATTERY = 33;

// Store-and-forward.
static const uint16_t RING_CAPACITY = 240;     // 240 readings = 4 hours at one a minute (~7.7 KB RAM)
static const uint8_t BATCH_MAX = 25;           // readings per backlog message (about 2.3 KB of JSON)
static const uint32_t BATCH_PACING_MS = 250;   // at most 4 backlog messages a second (limit is 50/s)
static const uint16_t PERSIST_EVERY = 10;      // copy the backlog to flash every 10 new unsent readings

// MQTT buffer: PubSubClient's default is 256 bytes for the WHOLE packet
// (header + topic + payload); a backlog batch does not fit. Keng accepts up
// to 262144 bytes by default; 4 KB is plenty here.
static const uint16_t MQTT_BUFFER_SIZE = 4096;

// Reconnect back-off.
static const uint32_t BACKOFF_MIN_MS = 1000;
static const uint32_t BACKOFF_MAX_MS = 5UL * 60UL * 1000UL;        // 5 minutes
static const uint32_t BACKOFF_BAD_CREDENTIALS_MS = 30UL * 60UL * 1000UL;  // CONNACK 4
static const uint32_t BACKOFF_DISABLED_MS = 30UL * 60UL * 1000UL;         // CONNACK 5

// ---------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------
WiFiClient net;  // for TLS on 8883 use WiFiClientSecure with the server's CA
PubSubClient mqtt(net);
Preferences prefs;

struct Reading {
  int64_t tsMs;        // epoch ms (UTC); 0 = the clock was not set when sampled
  int64_t monoMs;      // ms since boot when sampled (to date it once NTP answers)
  float soilMoisture;  // % volumetric, NAN when the probe failed
  float temperature;   // °C, NAN when the probe failed
  float batteryV;      // V, NAN when unknown
  int16_t rssi;        // dBm, 0 when unknown
};

struct Ring {
  uint32_t magic;
  uint16_t head;   // index of the oldest reading
  uint16_t count;  // readings waiting to be uploaded
  Reading items[RING_CAPACITY];
};

static const uint32_t RING_MAGIC = 0x4B454E47u;  // "KENG"
static Ring ring;
static uint16_t appendsSinceSave = 0;
static bool flashHasBacklog = false;

static char topicTelemetry[96];
static char topicAttributes[96];
static char topicStatus[96];
static char topicRpcRequestFilter[96];  // v1/devices/D/rpc/request/+
static char topicRpcRequestPrefix[96];  // v1/devices/D/rpc/request/
static char topicRpcResponsePrefix[96]; // v1/devices/D/rpc/response/

static uint32_t lastSampleMs = 0;
static bool firstSampleDone = false;
static uint32_t lastBatchMs = 0;
static uint32_t nextConnectAttemptMs = 0;
static uint32_t backoffMs = BACKOFF_MIN_MS;
static uint32_t wifiLostSinceMs = 0;

// RPC answers are queued by the MQTT callback and sent from loop(): the
// callback's topic and payload live in PubSubClient's buffer, which the next
// publish overwrites.
struct PendingResponse {
  bool used;
  char requestId[72];
  char body[128];
};
static PendingResponse pendingResponses[4];

// The last few request ids and answers: QoS 1 may deliver a request twice.
struct SeenRequest {
  char requestId[72];
  char body[128];
};
static SeenRequest seenRequests[8];
static uint8_t seenNext = 0;

// ---------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------
static int64_t monotonicMs() { return esp_timer_get_time() / 1000; }

static bool clockIsSet() {
  return time(nullptr) > 1700000000;  // later than Nov 2023: NTP has answered
}

static int64_t epochMs() {
  struct timeval tv;
  gettimeofday(&tv, nullptr);
  return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static void setupClock() {
  // configTime with offsets 0 keeps the system clock in UTC, then TZ gives
  // local time for logs. Epoch time (ts) does not depend on the time zone.
  configTime(0, 0, NTP_SERVER_1, NTP_SERVER_2, NTP_SERVER_3);
  setenv("TZ", TZ_INFO, 1);
  tzset();
}

static void logLocalTime() {
  if (!clockIsSet()) return;
  time_t now = time(nullptr);
  struct tm local;
  localtime_r(&now, &local);
  char buf[32];
  strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S ICT", &local);
  Serial.printf("[time] %s\n", buf);
}

// Readings taken before NTP answered carry only a monotonic time; date them
// now that the clock is known (valid until the next reboot).
static void dateUndatedReadings() {
  if (ring.count == 0 || ring.items[ring.head].tsMs != 0 || !clockIsSet()) return;  // nothing to date
  int64_t nowEpoch = epochMs();
  int64_t nowMono = monotonicMs();
  for (uint16_t i = 0; i < ring.count; i++) {
    Reading &r = ring.items[(ring.head + i) % RING_CAPACITY];
    if (r.tsMs == 0) r.tsMs = nowEpoch - (nowMono - r.monoMs);
  }
}

// ---------------------------------------------------------------------------
// Sensors
// ---------------------------------------------------------------------------
static uint32_t readMilliVoltsAvg(int pin) {
  uint32_t sum = 0;
  for (int i = 0; i < 16; i++) {
    sum += analogReadMilliVolts(pin);
    delay(2);
  }
  return sum / 16;
}

static float readSoilMoisture() {
  float mv = (float)readMilliVoltsAvg(PIN_SOIL);
  if (mv < 100.0f || mv > 3200.0f) return NAN;  // probe missing or shorted
  float pct = 100.0f * (SOIL_DRY_MV - mv) / (SOIL_DRY_MV - SOIL_WET_MV);
  if (pct < 0.0f) pct = 0.0f;
  if (pct > 100.0f) pct = 100.0f;
  return pct;
}

static float readTemperature() {
  const float VCC_MV = 3300.0f, SERIES_OHM = 10000.0f, NTC_OHM_25C = 10000.0f, BETA = 3950.0f;
  float mv = (float)readMilliVoltsAvg(PIN_NTC);
  if (mv < 50.0f || mv > 3250.0f) return NAN;  // open or shorted thermistor
  float ntcOhm = SERIES_OHM * mv / (VCC_MV - mv);
  float kelvin = 1.0f / (1.0f / 298.15f + logf(ntcOhm / NTC_OHM_25C) / BETA);
  return kelvin - 273.15f;
}

static float readBatteryV() {
  float mv = (float)readMilliVoltsAvg(PIN_BATTERY) * 2.0f;  // 1:1 divider
  if (mv < 500.0f) return NAN;                              // no battery wired
  return mv / 1000.0f;
}

// ---------------------------------------------------------------------------
// Ring buffer (RAM) and its copy in flash (NVS)
// ---------------------------------------------------------------------------
static void ringPush(const Reading &r) {
  if (ring.count == RING_CAPACITY) {  // full: overwrite the oldest reading
    ring.head = (ring.head + 1) % RING_CAPACITY;
    ring.count--;
    Serial.println("[ring] full, oldest reading dropped");
  }
  ring.items[(ring.head + ring.count) % RING_CAPACITY] = r;
  ring.count++;
  appendsSinceSave++;
}

static void ringDropOldest(uint16_t n) {
  if (n > ring.count) n = ring.count;
  ring.head = (ring.head + n) % RING_CAPACITY;
  ring.count -= n;
}

// Flash wear: NVS is written only while readings pile up unsent (offline),
// once per PERSIST_EVERY readings (every 10 minutes at one reading a minute).
// A stale flash copy only causes re-sends after a reboot, which Keng
// de-duplicates because every reading carries its own ts.
static void persistIfNeeded() {
  if (ring.count == 0) {
    if (flashHasBacklog) {
      prefs.remove("ring");
      flashHasBacklog = false;
    }
    appendsSinceSave = 0;
    return;
  }
  if (appendsSinceSave < PERSIST_EVERY) return;
  ring.magic = RING_MAGIC;
  if (prefs.putBytes("ring", &ring, sizeof ring) == sizeof ring) {
    flashHasBacklog = true;
    appendsSinceSave = 0;
    Serial.printf("[ring] %u readings saved to flash\n", ring.count);
  }
}

static void restoreFromFlash() {
  memset(&ring, 0, sizeof ring);
  if (prefs.getBytesLength("ring") != sizeof ring) return;
  Ring *saved = (Ring *)malloc(sizeof(Ring));
  if (!saved) return;
  prefs.getBytes("ring", saved, sizeof(Ring));
  if (saved->magic == RING_MAGIC && saved->count <= RING_CAPACITY && saved->head < RING_CAPACITY) {
    // Keep only readings that were dated: a monotonic time from before the
    // reboot means nothing now.
    for (uint16_t i = 0; i < saved->count; i++) {
      const Reading &r = saved->items[(saved->head + i) % RING_CAPACITY];
      if (r.tsMs != 0) ringPush(r);
    }
    flashHasBacklog = true;
    Serial.printf("[ring] %u readings restored from flash\n", ring.count);
  }
  free(saved);
  appendsSinceSave = 0;
}

// ---------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------
// Round in double precision so that 24.1 is printed as 24.1, not 24.1000004.
static double roundTo(float v, int decimals) {
  double f = pow(10.0, decimals);
  return round((double)v * f) / f;
}

// Adds only the values that exist: a NaN would be written as null by
// ArduinoJson, and one null makes Keng reject the whole payload.
static void fillValues(JsonObject values, const Reading &r) {
  if (!isnan(r.soilMoisture)) values["soil_moisture"] = roundTo(r.soilMoisture, 1);
  if (!isnan(r.temperature)) values["temperature"] = roundTo(r.temperature, 1);
  if (!isnan(r.batteryV)) values["battery_v"] = roundTo(r.batteryV, 2);
  if (r.rssi != 0) values["rssi"] = r.rssi;
}

static bool hasAnyValue(const Reading &r) {
  return !isnan(r.soilMoisture) || !isnan(r.temperature) || !isnan(r.batteryV) || r.rssi != 0;
}

// ---------------------------------------------------------------------------
// MQTT publishing
// ---------------------------------------------------------------------------
// The one place that decides the delivery guarantee.
//
// PubSubClient: QoS 0 only. true = written to the TCP socket, NOT stored by
// Keng. With arduino-mqtt (256dpi) the body is one line and true means the
// PUBACK arrived, i.e. the readings are on Keng's disk:
//     return mqtt.publish(topic, payload, retained, 1);   // QoS 1, waits for PUBACK
static bool publishReliable(const char *topic, const char *payload, bool retained) {
  return mqtt.publish(topic, payload, retained);
}

static char payloadBuf[MQTT_BUFFER_SIZE - 128];

// Send the oldest dated readings: one reading as {"ts","values"}, several as
// an array, oldest first (device protocol §6.4, §8.3).
static void uploadBacklogBatch() {
  if (ring.count == 0 || !mqtt.connected()) return;
  if (millis() - lastBatchMs < BATCH_PACING_MS) return;

  uint16_t n = 0;
  while (n < ring.count && n < BATCH_MAX && ring.items[(ring.head + n) % RING_CAPACITY].tsMs != 0) n++;
  if (n == 0) return;  // the oldest reading is not dated yet: wait for NTP

  JsonDocument doc;
  if (n == 1) {
    const Reading &r = ring.items[ring.head];
    doc["ts"] = r.tsMs;
    fillValues(doc["values"].to<JsonObject>(), r);
  } else {
    JsonArray arr = doc.to<JsonArray>();
    for (uint16_t i = 0; i < n; i++) {
      const Reading &r = ring.items[(ring.head + i) % RING_CAPACITY];
      JsonObject item = arr.add<JsonObject>();
      item["ts"] = r.tsMs;
      fillValues(item["values"].to<JsonObject>(), r);
    }
  }
  size_t len = measureJson(doc);
  if (len >= sizeof payloadBuf) {
    Serial.println("[mqtt] batch too large for the buffer: lower BATCH_MAX");
    return;
  }
  serializeJson(doc, payloadBuf, sizeof payloadBuf);
  lastBatchMs = millis();
  if (publishReliable(topicTelemetry, payloadBuf, false)) {
    // With a QoS 1 library this happens only after PUBACK (readings on disk).
    ringDropOldest(n);
    Serial.printf("[mqtt] sent %u reading(s), %u left\n", n, ring.count);
    persistIfNeeded();
  } else {
    Serial.println("[mqtt] publish failed, batch kept");
  }
}

// Clock not set yet but online: send the reading now as a flat object, which
// Keng dates at receipt (device protocol §6.1). It cannot be re-sent safely,
// so this path is used only for a fresh reading.
static bool publishFlat(const Reading &r) {
  JsonDocument doc;
  fillValues(doc.to<JsonObject>(), r);
  serializeJson(doc, payloadBuf, sizeof payloadBuf);
  return publishReliable(topicTelemetry, payloadBuf, false);
}

static void takeReading() {
  Reading r;
  r.monoMs = monotonicMs();
  r.tsMs = clockIsSet() ? epochMs() : 0;
  r.soilMoisture = readSoilMoisture();
  r.temperature = readTemperature();
  r.batteryV = readBatteryV();
  r.rssi = (WiFi.status() == WL_CONNECTED) ? (int16_t)WiFi.RSSI() : 0;
  Serial.printf("[sensor] soil=%.1f%% temp=%.1fC batt=%.2fV rssi=%d\n",
                r.soilMoisture, r.temperature, r.batteryV, r.rssi);
  logLocalTime();
  if (!hasAnyValue(r)) return;  // nothing valid to send

  if (r.tsMs == 0 && mqtt.connected() && publishFlat(r)) return;
  persistIfNeeded();  // readings still unsent from before: save them first
  ringPush(r);
}

static void publishOnlineStatus() {
  JsonDocument doc;
  doc["online"] = true;
  doc["firmware"] = FIRMWARE_VERSION;
  doc["ip"] = WiFi.localIP().toString();
  switch (esp_reset_reason()) {
    case ESP_RST_POWERON: doc["reset_reason"] = "power_on"; break;
    case ESP_RST_SW: doc["reset_reason"] = "software"; break;
    case ESP_RST_PANIC: doc["reset_reason"] = "panic"; break;
    case ESP_RST_BROWNOUT: doc["reset_reason"] = "brownout"; break;
    case ESP_RST_TASK_WDT:
    case ESP_RST_INT_WDT:
    case ESP_RST_WDT: doc["reset_reason"] = "watchdog"; break;
    default: doc["reset_reason"] = "other"; break;
  }
  serializeJson(doc, payloadBuf, sizeof payloadBuf);
  // Protocol: status is QoS 1 + retained. PubSubClient can only send it at QoS 0
  // (still retained). Keng's presence does not depend on this message.
  publishReliable(topicStatus, payloadBuf, true);
}

static void publishAttributes() {
  JsonDocument doc;
  doc["firmware"] = FIRMWARE_VERSION;
  doc["model"] = MODEL;
  JsonArray caps = doc["capabilities"].to<JsonArray>();
  caps.add("soil_moisture");
  caps.add("temperature");
  caps.add("battery_v");
  caps.add("rssi");
  doc["interval_s"] = SAMPLE_INTERVAL_MS / 1000;
  doc["ring_capacity"] = RING_CAPACITY;
  serializeJson(doc, payloadBuf, sizeof payloadBuf);
  publishReliable(topicAttributes, payloadBuf, false);
}

// ---------------------------------------------------------------------------
// RPC (device protocol §11): a soil sensor has no methods in v1, so every
// well-formed request is answered "rejected". Add methods in answerRpc().
// ---------------------------------------------------------------------------
static void queueResponse(const char *requestId, const char *body) {
  for (auto &p : pendingResponses) {
    if (!p.used) {
      p.used = true;
      strlcpy(p.requestId, requestId, sizeof p.requestId);
      strlcpy(p.body, body, sizeof p.body);
      return;
    }
  }
  Serial.println("[rpc] response queue full, request left unanswered");
}

static void answerRpc(const char *requestId, const byte *payload, unsigned int length) {
  // Same request id seen before (QoS 1 redelivery): repeat the answer.
  for (auto &s : seenRequests) {
    if (s.requestId[0] && strcmp(s.requestId, requestId) == 0) {
      queueResponse(requestId, s.body);
      return;
    }
  }

  char body[128];
  JsonDocument req;
  DeserializationError err = deserializeJson(req, (const char *)payload, length);
  const char *method = req["method"] | "";
  int64_t expiresAt = req["expiresAt"] | (int64_t)0;

  if (err || method[0] == '\0') {
    strlcpy(body, "{\"status\":\"rejected\",\"detail\":\"bad request\"}", sizeof body);
  } else if (expiresAt > 0 && clockIsSet() && epochMs() > expiresAt) {
    strlcpy(body, "{\"status\":\"rejected\",\"detail\":\"expired\"}", sizeof body);
  } else {
    // Unknown methods are answered "rejected" (device protocol §11.2).
    strlcpy(body, "{\"status\":\"rejected\",\"detail\":\"unknown method\"}", sizeof body);
  }
  Serial.printf("[rpc] %s %s -> %s\n", requestId, method, body);

  SeenRequest &s = seenRequests[seenNext];
  seenNext = (seenNext + 1) % (sizeof seenRequests / sizeof seenRequests[0]);
  strlcpy(s.requestId, requestId, sizeof s.requestId);
  strlcpy(s.body, body, sizeof s.body);
  queueResponse(requestId, body);
}

static void onMqttMessage(char *topic, byte *payload, unsigned int length) {
  size_t prefixLen = strlen(topicRpcRequestPrefix);
  if (strncmp(topic, topicRpcRequestPrefix, prefixLen) != 0) return;
  const char *requestId = topic + prefixLen;
  if (requestId[0] == '\0' || strlen(requestId) >= sizeof(pendingResponses[0].requestId)) return;
  answerRpc(requestId, payload, length);
}

static void sendPendingResponses() {
  for (auto &p : pendingResponses) {
    if (!p.used || !mqtt.connected()) continue;
    char topic[sizeof topicRpcResponsePrefix + sizeof p.requestId];
    snprintf(topic, sizeof topic, "%s%s", topicRpcResponsePrefix, p.requestId);
    // Protocol: responses are QoS 1; PubSubClient sends QoS 0 (see publishReliable).
    if (publishReliable(topic, p.body, false)) p.used = false;
  }
}

// ---------------------------------------------------------------------------
// Connection management
// ---------------------------------------------------------------------------
static uint32_t withJitter(uint32_t ms) {
  // ± 20 %: hundreds of devices must not reconnect in the same second after
  // a power cut in the commune.
  long span = (long)(ms / 5);
  return ms - span + (uint32_t)random(0, 2 * span + 1);  // ESP32 random() uses the hardware RNG
}

static void scheduleReconnect(uint32_t delayMs) {
  nextConnectAttemptMs = millis() + withJitter(delayMs);
  Serial.printf("[mqtt] next attempt in %lu ms\n", (unsigned long)(nextConnectAttemptMs - millis()));
}

static void mqttConnect() {
  Serial.printf("[mqtt] connecting to %s:%u as %s\n", MQTT_HOST, MQTT_PORT, DEVICE_ID);
  bool ok = mqtt.connect(
      DEVICE_ID,          // client id = device id (a reconnect takes over the old session)
      DEVICE_ID,          // username = device id
      DEVICE_SECRET,      // password = device secret
      topicStatus,        // will topic
      1,                  // will QoS 1
      true,               // will retained
      "{\"online\":false}",
      true);              // clean session: Keng keeps pending commands itself
  if (!ok) {
    int state = mqtt.state();
    Serial.printf("[mqtt] connect failed, state %d\n", state);
    if (state == MQTT_CONNECT_BAD_CREDENTIALS) {         // CONNACK 4
      Serial.println("[mqtt] refused: unknown device or wrong secret; check the flashed credentials");
      scheduleReconnect(BACKOFF_BAD_CREDENTIALS_MS);
    } else if (state == MQTT_CONNECT_UNAUTHORIZED) {     // CONNACK 5
      Serial.println("[mqtt] refused: device disabled by commune staff");
      scheduleReconnect(BACKOFF_DISABLED_MS);
    } else {
      scheduleReconnect(backoffMs);
      backoffMs = backoffMs * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoffMs * 2;
    }
    return;
  }
  Serial.println("[mqtt] connected");
  backoffMs = BACKOFF_MIN_MS;
  // 1. commands, 2. presence, 3. attributes, 4. backlog (loop() uploads it).
  mqtt.subscribe(topicRpcRequestFilter, 1);
  publishOnlineStatus();
  publishAttributes();
}

static void maintainWifi() {
  if (WiFi.status() == WL_CONNECTED) {
    wifiLostSinceMs = 0;
    return;
  }
  if (wifiLostSinceMs == 0) wifiLostSinceMs = millis();
  // Auto-reconnect normally handles it; kick the driver after a minute.
  if (millis() - wifiLostSinceMs > 60000) {
    Serial.println("[wifi] still down, restarting the connection");
    WiFi.disconnect();
    WiFi.begin(WIFI_SSID, WIFI_PASS);
    wifiLostSinceMs = millis();
  }
}

// ---------------------------------------------------------------------------
// Arduino entry points
// ---------------------------------------------------------------------------
void setup() {
  Serial.begin(115200);
  delay(200);
  Serial.printf("\nKeng soil sensor %s, device %s\n", FIRMWARE_VERSION, DEVICE_ID);

  snprintf(topicTelemetry, sizeof topicTelemetry, "v1/devices/%s/telemetry", DEVICE_ID);
  snprintf(topicAttributes, sizeof topicAttributes, "v1/devices/%s/attributes", DEVICE_ID);
  snprintf(topicStatus, sizeof topicStatus, "v1/devices/%s/status", DEVICE_ID);
  snprintf(topicRpcRequestFilter, sizeof topicRpcRequestFilter, "v1/devices/%s/rpc/request/+", DEVICE_ID);
  snprintf(topicRpcRequestPrefix, sizeof topicRpcRequestPrefix, "v1/devices/%s/rpc/request/", DEVICE_ID);
  snprintf(topicRpcResponsePrefix, sizeof topicRpcResponsePrefix, "v1/devices/%s/rpc/response/", DEVICE_ID);

  prefs.begin("keng", false);
  restoreFromFlash();

  WiFi.mode(WIFI_STA);
  WiFi.setAutoReconnect(true);
  WiFi.begin(WIFI_SSID, WIFI_PASS);
  setupClock();  // SNTP starts once Wi-Fi is up and re-syncs every hour

  if (!mqtt.setBufferSize(MQTT_BUFFER_SIZE)) Serial.println("[mqtt] could not allocate the MQTT buffer");
  mqtt.setServer(MQTT_HOST, MQTT_PORT);
  mqtt.setKeepAlive(KEEPALIVE_S);
  mqtt.setSocketTimeout(10);
  mqtt.setCallback(onMqttMessage);
}

void loop() {
  maintainWifi();

  if (WiFi.status() == WL_CONNECTED) {
    if (!mqtt.connected()) {
      if ((int32_t)(millis() - nextConnectAttemptMs) >= 0) mqttConnect();
    } else {
      mqtt.loop();  // keep-alive, incoming RPC requests
      sendPendingResponses();
      dateUndatedReadings();
      uploadBacklogBatch();
    }
  }

  if (!firstSampleDone || millis() - lastSampleMs >= SAMPLE_INTERVAL_MS) {
    firstSampleDone = true;
    lastSampleMs = millis();
    takeReading();
  }
  delay(10);
}
