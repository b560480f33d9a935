"""Face detector backends (MTCNN, dlib, insightface) behind guide_unlearn.faces."""
