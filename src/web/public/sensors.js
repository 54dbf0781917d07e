// What the farmer's view knows about sensor fields: names, units, digits, and
// the plain-language state of soil moisture. One table each, so adding a
// field or a sensor model is one line here.

/** Field → label (vi, en), unit and decimals shown. Fields not listed are shown by their name. */
export const FIELDS = {
  soil_moisture: { vi: 'Độ ẩm đất', en: 'Soil moisture', unit: '%', digits: 1 },
  soil_temp_c: { vi: 'Nhiệt độ đất', en: 'Soil temperature', unit: '°C', digits: 1 },
  temperature: { vi: 'Nhiệt độ', en: 'Temperature', unit: '°C', digits: 1 },
  humidity: { vi: 'Độ ẩm không khí', en: 'Air humidity', unit: '%', digits: 0 },
  rain_mm: { vi: 'Lượng mưa', en: 'Rain', unit: 'mm', digits: 1 },
  water_level_cm: { vi: 'Mực nước', en: 'Water level', unit: 'cm', digits: 0 },
  wind_ms: { vi: 'Gió', en: 'Wind', unit: 'm/s', digits: 1 },
  ec_us_cm: { vi: 'Độ dẫn điện đất', en: 'Soil conductivity', unit: 'µS/cm', digits: 0 },
  ph: { vi: 'Độ pH', en: 'pH', unit: '', digits: 1 },
  pm25: { vi: 'Bụi mịn PM2.5', en: 'PM2.5', unit: 'µg/m³', digits: 0 },
  pm10: { vi: 'Bụi PM10', en: 'PM10', unit: 'µg/m³', digits: 0 },
  co2_ppm: { vi: 'CO₂', en: 'CO₂', unit: 'ppm', digits: 0 },
  battery_v: { vi: 'Pin', en: 'Battery', unit: 'V', digits: 2 },
  rssi: { vi: 'Sóng', en: 'Signal', unit: 'dBm', digits: 0 },
};

/** Field order on a card: the farmer's quantities first, the device's health (battery, signal) last. */
export function fieldOrder(names) {
  const known = Object.keys(FIELDS);
  const rank = (n) => (known.includes(n) ? known.indexOf(n) : known.length - 2);
  return [...names].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
}

/**
 * Soil moisture (volumetric water content, %) in words, by sensor model:
 * below `dry` the field is dry (khô), above `wet` it is wet (ẩm), in between
 * it is fine (vừa). `default` holds for every model not listed; a model whose
 * probe reads differently gets its own line.
 */
export const SOIL_THRESHOLDS = {
  default: { dry: 20, wet: 35 },
};

/** 'dry' | 'ok' | 'wet' for a soil moisture reading, or null when it is not a number. */
export function soilState(value, model) {
  if (typeof value !== 'number' || !Number.isFinite(value)) return null;
  const t = SOIL_THRESHOLDS[model] ?? SOIL_THRESHOLDS.default;
  return value < t.dry ? 'dry' : value > t.wet ? 'wet' : 'ok';
}
