"""
CasCast: members over extrapolation, exceedance probability, spectra
====================================================================

``model="cascast"`` cascades two stages (Gong et al. 2024): a deterministic
nowcast that places the rain (here the project's extrapolation), and a latent
diffusion model that generates, member by member, what the deterministic
stage cannot know: growth, decay, small-scale structure. Each member is one
draw of the diffusion model's noise, seeded, so the ensemble is reproducible.
The deterministic stage also sets each member's amplitude at scales above 16 km
(``anchor_sigma``): the diffusion decides where and with what texture the rain
falls within them.  Each member's deterministic stage moves along its own
perturbed motion (``motion_perturbation``, as STEPS perturbs it), so the members
also differ in where the storms go.

The shipped ``small`` weights were trained on CPU for a few hours on four
5-minute radar events; the :doc:`/cascast_skill_card` shows where they stand
against extrapolation, STEPS and DGMR on the held-out RMI event (this sample
comes from that event). Here: four members next to the radar, the probability
of rain ``>= 1 mm/h``, and the power spectra that show how much small-scale
structure each forecast keeps.
"""

import matplotlib.pyplot as plt
import numpy as np

import xnowcast
from xnowcast.plot import plot_exceedance, plot_psd, plot_scores

obs = xnowcast.open_dataset("sample")["precipitation"].isel(y=slice(64, 192), x=slice(0, 128))
init = obs.time.values[8]
ensemble = obs.nowcast.predict(
    model="cascast", steps=12, members=4, init_time=init, seed=0, progress=False
)
extrapolation = obs.nowcast.predict(model="extrapolation", steps=12, init_time=init)
print(ensemble.dims, ensemble.attrs["units"], ensemble.attrs["xnowcast_weights"])

# %%
# The radar at +60 min, the extrapolation nowcast the cascade starts from, and
# three members: the same storms where extrapolation puts them, each member
# with its own intensity and structure.
valid = init + np.timedelta64(60, "m")
fig, axes = plt.subplots(1, 5, figsize=(15, 3.4), layout="constrained")
style = dict(vmin=0, vmax=20, cmap="turbo", add_colorbar=False)
obs.sel(time=valid).plot(ax=axes[0], **style)
axes[0].set_title("observed, +60 min")
extrapolation.isel(lead_time=-1).plot(ax=axes[1], **style)
axes[1].set_title("extrapolation")
for member, ax in zip(range(3), axes[2:], strict=True):
    image = ensemble.isel(lead_time=-1, member=member).plot(ax=ax, **style)
    ax.set_title(f"cascast member {member}")
for ax in axes:
    ax.set_axis_off()
fig.colorbar(image, ax=axes, label="rain rate (mm/h)", shrink=0.8)

# %%
# The probability of rain ``>= 1 mm/h`` is the fraction of members that reach
# it; the observed 1 mm/h contour is drawn on top.
plot_exceedance(ensemble, "1 mm/h", 60, observations=obs)

# %%
# Power spectra at +30 min: a forecast that keeps the radar's small scales
# follows the radar's line to the right (short wavelengths); a smooth one
# drops below it. The ensemble mean is smoother than any member by
# construction; the members' texture comes from the diffusion stage. The
# shipped weights sample with ``temperature`` 1.1 (a starting noise 10 %
# larger than in training): the denoiser alone, at ``temperature`` 1, draws
# members smoother than radar and an ensemble too narrow for its errors; 1.1
# gave the lower fair CRPS on the training events (``benchmarks/RESULTS.md``
# 15p). Any setting can be given per call, as here.
as_trained = obs.nowcast.predict(
    model="cascast", steps=6, members=4, init_time=init, seed=0, progress=False,
    config={"temperature": 1.0},
)  # fmt: skip
when = init + np.timedelta64(30, "m")
spectra = {
    "radar": obs.sel(time=when),
    "extrapolation": extrapolation.sel(lead_time=np.timedelta64(30, "m")),
    "cascast members": ensemble.sel(lead_time=np.timedelta64(30, "m")),
    "cascast members, temperature 1": as_trained.sel(lead_time=np.timedelta64(30, "m")),
    "cascast ensemble mean": ensemble.sel(lead_time=np.timedelta64(30, "m")).mean("member"),
}
ax = plot_psd(spectra, fill_value=0.0)
ax.set_title("power spectra at +30 min")

# %%
# CRPS against lead time, on the pixels every forecast knows: for the
# deterministic extrapolation it is the mean absolute error.
common = ensemble.notnull().all("member") & extrapolation.notnull()
scores = {
    "cascast (4 members)": ensemble.where(common).nowcast.verify(obs, metrics=["crps"]),
    "extrapolation": extrapolation.where(common).nowcast.verify(obs, metrics=["crps"]),
}
ax = plot_scores(scores, "crps", scale=1)
ax.set_ylabel("CRPS (mm/h), lower is better")
plt.show()
