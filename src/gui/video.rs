//! The live video with a box and the top emotion over each face.

use egui::{
    Align2, Color32, FontId, Rect, Sense, Stroke, StrokeKind, TextureHandle, Ui, Vec2, pos2,
};

use super::bars::{color, percent};
use crate::track::TrackedFace;

/// Draw the frame scaled to fit the space, then each face's box and label.
pub fn show(ui: &mut Ui, texture: &TextureHandle, frame_size: [usize; 2], faces: &[TrackedFace]) {
    let avail = ui.available_size();
    let (fw, fh) = (frame_size[0] as f32, frame_size[1] as f32);
    let scale = (avail.x / fw).min(avail.y / fh).max(0.05);
    let size = Vec2::new(fw * scale, fh * scale);
    let (rect, _) = ui.allocate_exact_size(size, Sense::hover());
    let painter = ui.painter_at(rect);
    painter.image(
        texture.id(),
        rect,
        Rect::from_min_max(pos2(0.0, 0.0), pos2(1.0, 1.0)),
        Color32::WHITE,
    );
    for f in faces {
        let (top, p) = f.smoothed.top();
        let b = f.bbox;
        let r = Rect::from_min_size(
            rect.min + Vec2::new(b.x as f32, b.y as f32) * scale,
            Vec2::new(b.w as f32, b.h as f32) * scale,
        );
        painter.rect_stroke(r, 2.0, Stroke::new(2.0, color(top)), StrokeKind::Outside);
        let label = format!("#{} {} {}", f.id, top, percent(p));
        let font = FontId::proportional(14.0);
        let galley = painter.layout_no_wrap(label, font, Color32::BLACK);
        let bg = Rect::from_min_size(
            r.left_top() - Vec2::new(0.0, galley.size().y + 4.0),
            galley.size() + Vec2::new(8.0, 4.0),
        );
        painter.rect_filled(bg, 2.0, color(top));
        painter.galley(bg.min + Vec2::new(4.0, 2.0), galley, Color32::BLACK);
        let _ = Align2::LEFT_TOP;
    }
}
