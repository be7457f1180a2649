// A small line chart on a canvas: the last N samples of one series, scaled to its own range.
// `data-points` on the canvas says how many points were drawn and `data-max` the largest
// sample shown (tests and screen readers).

const KEEP = 120;

export class LineChart {
  readonly element: HTMLElement;
  private readonly canvas: HTMLCanvasElement;
  private readonly value: HTMLElement;
  private readonly samples: number[] = [];

  constructor(
    readonly id: string,
    title: string,
    private readonly format: (v: number) => string,
  ) {
    this.canvas = document.createElement("canvas");
    this.canvas.width = 360;
    this.canvas.height = 120;
    this.canvas.id = `chart-${id}`;
    this.canvas.dataset.points = "0";
    this.canvas.dataset.max = "0";
    this.value = document.createElement("span");
    this.value.className = "chart-value";
    const heading = document.createElement("h3");
    heading.append(title, " ", this.value);
    this.element = document.createElement("figure");
    this.element.className = "chart";
    this.element.append(heading, this.canvas);
  }

  push(v: number): void {
    this.samples.push(v);
    if (this.samples.length > KEEP) this.samples.shift();
    this.value.textContent = this.format(v);
    this.draw();
  }

  private draw(): void {
    const ctx = this.canvas.getContext("2d");
    if (!ctx) return;
    const { width, height } = this.canvas;
    const pad = 8;
    ctx.clearRect(0, 0, width, height);
    ctx.strokeStyle = "#d0d7de";
    ctx.lineWidth = 1;
    ctx.strokeRect(0.5, 0.5, width - 1, height - 1);
    const max = Math.max(...this.samples, 1);
    const min = Math.min(...this.samples, 0);
    const span = max - min || 1;
    // A young series fills a minute's width, then scrolls once it has KEEP samples.
    const slots = Math.min(KEEP, Math.max(this.samples.length, 60));
    const step = (width - 2 * pad) / (slots - 1);
    const x = (i: number) => pad + i * step;
    const y = (v: number) => height - pad - ((v - min) / span) * (height - 2 * pad);
    ctx.strokeStyle = "#0969da";
    ctx.lineWidth = 2;
    ctx.beginPath();
    this.samples.forEach((v, i) => (i === 0 ? ctx.moveTo(x(i), y(v)) : ctx.lineTo(x(i), y(v))));
    ctx.stroke();
    ctx.fillStyle = "#0969da";
    this.samples.forEach((v, i) => {
      ctx.beginPath();
      ctx.arc(x(i), y(v), 2.5, 0, 2 * Math.PI);
      ctx.fill();
    });
    this.canvas.dataset.points = String(this.samples.length);
    this.canvas.dataset.max = String(Math.max(...this.samples));
  }
}
