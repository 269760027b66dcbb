"""The national categories of needs in digital mediation (La Coop de la médiation numérique).

Themes and statistics use these keys, so that a city's figures can be compared with the
national ones and exported without re-coding. Labels are the French ones of the national tool.
"""

from __future__ import annotations

# Themes of digital support (thématiques).
SUPPORT_THEMES: dict[str, str] = {
    "diagnostic_numerique": "Diagnostic numérique",
    "prendre_en_main_du_materiel": "Prendre en main du matériel",
    "maintenance_de_materiel": "Maintenance de matériel",
    "gere_ses_contenus_numeriques": "Gérer ses contenus numériques",
    "navigation_sur_internet": "Navigation sur internet",
    "email": "E-mail",
    "bureautique": "Bureautique",
    "reseaux_sociaux": "Réseaux sociaux, communication",
    "sante": "Santé",
    "banque_et_achats_en_ligne": "Banque et achats en ligne",
    "entrepreneuriat": "Accompagner un professionnel",
    "insertion_professionnelle": "Insertion professionnelle",
    "securite_numerique": "Prévention en sécurité numérique",
    "parentalite": "Parentalité",
    "scolarite_et_numerique": "Scolarité et numérique",
    "creer_avec_le_numerique": "Créer avec le numérique",
    "culture_numerique": "Culture numérique",
    "intelligence_artificielle": "Intelligence artificielle (IA)",
}

# Online administrative procedures (démarches administratives).
ADMINISTRATIVE_PROCEDURES: dict[str, str] = {
    "papiers_elections_citoyennete": "Papiers, élections, citoyenneté",
    "famille_scolarite": "Famille, scolarité",
    "social_sante": "Social, santé",
    "travail_formation": "Travail, formation",
    "logement": "Logement",
    "transports_mobilite": "Transports, mobilité",
    "argent_impots": "Argent, impôts",
    "justice": "Justice",
    "etrangers_europe": "Étrangers, Europe",
    "loisirs_sports_culture": "Loisirs, sports, culture",
}

# Every key a theme may use as its `need_category`, with its French label.
NEED_CATEGORIES: dict[str, str] = {**SUPPORT_THEMES, **ADMINISTRATIVE_PROCEDURES}
