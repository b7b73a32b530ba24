// One video tile per remote seat of the consultation (issue 19 item 3: doctor + patient + up to two guests), labelled
// with the seat's name and role; a tile goes when its seat leaves. The patient's tile keeps the id "remote-video".
import { t } from "./i18n.js";

export function seatLabel({ name, role }) {
  const r = t(`role.${role}`);
  return name ? `${name} (${r})` : r;
}

export class Tiles {
  constructor() {
    this.el = Object.assign(document.createElement("div"), { className: "tiles" });
    this.el.dataset.count = "0";
    this.tiles = new Map();
  }

  // The <video> of `seat`'s tile (created on first use; the label follows the latest name/role).
  video(seat, who) {
    let tile = this.tiles.get(seat);
    if (!tile) {
      const fig = Object.assign(document.createElement("figure"), { className: "tile" });
      fig.dataset.seat = seat;
      const video = Object.assign(document.createElement("video"), { autoplay: true, playsInline: true, muted: true });
      if (seat === "patient") video.id = "remote-video";
      const cap = document.createElement("figcaption");
      fig.append(video, cap);
      tile = { fig, video, cap };
      this.tiles.set(seat, tile);
      this.el.append(fig);
      this.el.dataset.count = String(this.tiles.size);
    }
    const label = seatLabel(who);
    tile.cap.textContent = label;
    tile.video.setAttribute("aria-label", t("consult.tile", { who: label }));
    return tile.video;
  }

  remove(seat) {
    const tile = this.tiles.get(seat);
    if (!tile) return;
    tile.video.srcObject = null;
    tile.fig.remove();
    this.tiles.delete(seat);
    this.el.dataset.count = String(this.tiles.size);
  }
}
