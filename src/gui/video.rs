//! The video with a box and the top class over each face. Faces the tracker carried through a
//! frame the detector missed are drawn dashed and faded; a click on a box picks that face.

use egui::{Color32, FontId, Pos2, Rect, Sense, Stroke, StrokeKind, TextureHandle, Ui, Vec2, pos2};

use super::bars::{color, percent};
use crate::track::TrackedFace;

/// Draw the frame scaled to fit the space, then each face's box and label; returns the id of
/// a face whose box was clicked.
pub fn show(
    ui: &mut Ui,
    texture: &TextureHandle,
    frame_size: [usize; 2],
    faces: &[TrackedFace],
    chosen: Option<u64>,
) -> Option<u64> {
    let avail = ui.available_size();
    let (fw, fh) = (frame_size[0] as f32, frame_size[1] as f32);
    let scale = (avail.x / fw).min(avail.y / fh).max(0.05);
    let size = Vec2::new(fw * scale, fh * scale);
    let (rect, response) = ui.allocate_exact_size(size, Sense::click());
    let painter = ui.painter_at(rect);
    painter.image(
        texture.id(),
        rect,
        Rect::from_min_max(pos2(0.0, 0.0), pos2(1.0, 1.0)),
        Color32::WHITE,
    );
    let boxes: Vec<(u64, Rect)> = faces
        .iter()
        .map(|f| {
            let b = f.bbox;
            let r = Rect::from_min_size(
                rect.min + Vec2::new(b.x as f32, b.y as f32) * scale,
                Vec2::new(b.w as f32, b.h as f32) * scale,
            );
            (f.id, r)
        })
        .collect();
    for (f, (_, r)) in faces.iter().zip(&boxes) {
        let (top, p) = f.smoothed.top();
        let mut c = color(top);
        let width = if chosen == Some(f.id) { 3.0 } else { 2.0 };
        if f.detected {
            painter.rect_stroke(*r, 2.0, Stroke::new(width, c), StrokeKind::Outside);
        } else {
            c = c.gamma_multiply(0.55);
            dashed_rect(&painter, *r, Stroke::new(width, c));
        }
        let carried = if f.detected { "" } else { " ~" };
        let label = format!("#{} {} {}{carried}", f.id, top, percent(p));
        let galley = painter.layout_no_wrap(label, FontId::proportional(14.0), Color32::BLACK);
        let bg = Rect::from_min_size(
            r.left_top() - Vec2::new(0.0, galley.size().y + 4.0),
            galley.size() + Vec2::new(8.0, 4.0),
        );
        painter.rect_filled(bg, 2.0, c);
        painter.galley(bg.min + Vec2::new(4.0, 2.0), galley, Color32::BLACK);
    }
    let click = response
        .clicked()
        .then(|| response.interact_pointer_pos())??;
    // The smallest box under the pointer: a small face in front of a big one stays pickable.
    boxes
        .iter()
        .filter(|(_, r)| r.expand(4.0).contains(click))
        .min_by(|a, b| a.1.area().total_cmp(&b.1.area()))
        .map(|(id, _)| *id)
}

/// A rectangle outline of dashes, for faces the tracker carries.
fn dashed_rect(painter: &egui::Painter, r: Rect, stroke: Stroke) {
    let corners = [
        r.left_top(),
        r.right_top(),
        r.right_bottom(),
        r.left_bottom(),
        r.left_top(),
    ];
    for w in corners.windows(2) {
        let pts: [Pos2; 2] = [w[0], w[1]];
        painter.extend(egui::Shape::dashed_line(&pts, stroke, 6.0, 4.0));
    }
}
