// The patient's prescriptions in the patient space (#/me): registers the "prescriptions" section of me.js (its extension
// point) with my_prescriptions.js. Import this module before the space is drawn (app.js, with me.js).
import { registerSection } from "./me.js";
import { MyPrescriptions } from "./my_prescriptions.js";

registerSection({
  id: "prescriptions",
  async render(root, ctx) {
    root.dataset.slot = "prescriptions";
    const view = new MyPrescriptions(root, ctx.pid, { heading: false });
    await view.ready;
    return view;
  },
});
